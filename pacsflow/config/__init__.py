"""Settings: one pydantic-settings tree, passed in explicitly (see settings.py)."""

from pacsflow.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
