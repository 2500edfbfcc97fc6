"""The clinical web app: REST API and server-rendered pages, gated by role (RBAC)."""

from pacsflow.web.app import create_web_app

__all__ = ["create_web_app"]
