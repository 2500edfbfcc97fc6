"""The registry as the web UI sees it: plain callables the platform's app factory takes,
so the platform never imports the models package (layering of DESIGN.md)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from models.registry import Approval, Registry


def registry_callables(tracking_uri: str) -> tuple[Any, Any]:
    """(model_versions, approve_model) for pacsflow.web.app.create_web_app."""

    def model_versions() -> list[dict[str, Any]]:
        registry = Registry(tracking_uri)
        return [
            {
                "name": v.name,
                "version": v.version,
                "aliases": v.aliases,
                "approved": v.approved,
                "approval": asdict(v.approval) if v.approval else None,
                "metrics": v.metrics,
                "run_id": v.run_id,
            }
            for name in registry.names()
            for v in registry.versions(name)
        ]

    def approve_model(
        name: str,
        version: str,
        *,
        approved_by: str,
        evidence_run: str,
        intended_use: str,
        limitations: str,
    ) -> dict[str, Any]:
        info = Registry(tracking_uri).approve(
            name, version, Approval(approved_by, evidence_run, intended_use, limitations)
        )
        return {"name": info.name, "version": info.version, "approved": info.approved}

    return model_versions, approve_model
