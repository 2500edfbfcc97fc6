"""The model registry on MLflow: versions, approvals, champion/challenger aliases.

Governance rules enforced here, not by convention:
- approval is a recorded decision (who, when, evidence run, intended use, limitations)
  stored as tags on the model version;
- `promote` moves the `champion` alias only to an approved version;
- every champion move is remembered, so `rollback` returns to the previous champion;
- `challenger` marks a version that runs in shadow mode (results stored, never written back).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pacsflow.errors import InvalidInputError, PermanentError

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

CHAMPION = "champion"
CHALLENGER = "challenger"
_HISTORY_TAG = "pacsflow.champion_history"
_PIP_REQUIREMENTS = ["torch==2.13.0", "monai", "numpy", "scipy"]


class NotApprovedError(PermanentError):
    """A champion must be an approved version."""


@dataclass(frozen=True)
class Approval:
    approved_by: str
    evidence_run: str
    intended_use: str
    limitations: str
    approved_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    run_id: str | None
    aliases: list[str]
    approval: Approval | None
    metrics: dict[str, float]
    tags: dict[str, str]
    description: str

    @property
    def approved(self) -> bool:
        return self.approval is not None


def _client(tracking_uri: str) -> Any:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def default_artifact_root(tracking_uri: str) -> Path | None:
    """Where runs logged straight into a SQLite store keep their artifacts: `artifacts/`
    beside the database (the layout `pacsflow stack` gives the MLflow server). Without
    this MLflow would fall back to `./mlruns` under whatever the working directory is."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return Path(tracking_uri[len(prefix) :]).resolve().parent / "artifacts"


class Registry:
    def __init__(self, tracking_uri: str, *, artifact_root: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root or default_artifact_root(tracking_uri)
        self.client = _client(tracking_uri)

    def experiment_id(self, name: str) -> str:
        """The id of experiment `name`, created (with its artifacts under the artifact
        root) when missing."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.artifact_root is not None:
            location = (self.artifact_root / name).resolve().as_uri()
        return str(self.client.create_experiment(name, artifact_location=location))

    # --- registration -------------------------------------------------------------
    def register(
        self,
        name: str,
        *,
        weights: Path,
        config: Path,
        model_card: str,
        metrics: dict[str, float],
        params: dict[str, Any],
        experiment: str | None = None,
        evaluation_artifacts: dict[str, Path] | None = None,
    ) -> VersionInfo:
        """Log weights, config, model card and evaluation metrics in one MLflow run and
        register the run's model as a new version of `name` (not approved)."""
        import mlflow

        from models.serving import SegmenterPyfunc

        default = name if name.startswith("pacsflow-") else f"pacsflow-{name}"
        experiment_id = self.experiment_id(experiment or default)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}-register") as run:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.log_metrics(metrics)
            mlflow.log_text(model_card, "model_card.md")
            for label, path in (evaluation_artifacts or {}).items():
                mlflow.log_artifact(str(path), artifact_path=f"evaluation/{label}")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=SegmenterPyfunc(),
                artifacts={"weights": str(weights), "config": str(config)},
                pip_requirements=_PIP_REQUIREMENTS,
                registered_model_name=name,
                await_registration_for=0,
            )
        versions = self.client.search_model_versions(
            f"name='{name}' and run_id='{run.info.run_id}'"
        )
        version = str(max(int(v.version) for v in versions))
        self.client.update_model_version(name, version, description=model_card[:4000])
        del info
        return self.show(name, version)

    # --- governance -----------------------------------------------------------------
    def approve(self, name: str, version: str, approval: Approval) -> VersionInfo:
        for key in ("approved_by", "evidence_run", "intended_use"):
            if not getattr(approval, key).strip():
                raise InvalidInputError(f"approval needs {key.replace('_', ' ')}")
        self._version(name, version)  # exists?
        self.client.get_run(approval.evidence_run)  # the evidence must be a real run
        for key, value in approval.__dict__.items():
            self.client.set_model_version_tag(name, version, f"approval.{key}", value)
        self.client.set_model_version_tag(name, version, "approval.status", "approved")
        return self.show(name, version)

    def promote(self, name: str, version: str) -> VersionInfo:
        """Point `champion` at an approved version, remembering the previous champion."""
        info = self.show(name, version)
        if not info.approved:
            raise NotApprovedError(
                f"{name} v{version} is not approved; run `pacsflow models approve` first"
            )
        previous = self.champion_version(name)
        if previous == version:
            return info
        history = self._history(name)
        if previous is not None:
            history.append(previous)
        self.client.set_registered_model_tag(name, _HISTORY_TAG, json.dumps(history))
        self.client.set_registered_model_alias(name, CHAMPION, version)
        return self.show(name, version)

    def rollback(self, name: str) -> VersionInfo:
        """Move `champion` back to the version it pointed at before the last promote."""
        history = self._history(name)
        current = self.champion_version(name)
        while history:
            previous = history.pop()
            if previous != current and self.show(name, previous).approved:
                self.client.set_registered_model_tag(name, _HISTORY_TAG, json.dumps(history))
                self.client.set_registered_model_alias(name, CHAMPION, previous)
                return self.show(name, previous)
        raise PermanentError(f"{name} has no earlier approved champion to roll back to")

    def shadow(self, name: str, version: str | None) -> VersionInfo | None:
        """Set (or with None, clear) the `challenger` alias: the version runs in shadow mode."""
        if version is None:
            try:
                self.client.delete_registered_model_alias(name, CHALLENGER)
            except Exception:  # no alias set: nothing to clear
                pass
            return None
        self._version(name, version)
        self.client.set_registered_model_alias(name, CHALLENGER, version)
        return self.show(name, version)

    # --- reading --------------------------------------------------------------------
    def champion_version(self, name: str) -> str | None:
        return self._alias(name, CHAMPION)

    def challenger_version(self, name: str) -> str | None:
        return self._alias(name, CHALLENGER)

    def _alias(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def versions(self, name: str) -> list[VersionInfo]:
        found = self.client.search_model_versions(f"name='{name}'")
        return sorted(
            (self.show(name, str(v.version)) for v in found), key=lambda v: int(v.version)
        )

    def show(self, name: str, version: str) -> VersionInfo:
        mv = self._version(name, version)
        tags = dict(mv.tags or {})
        approval = None
        if tags.get("approval.status") == "approved":
            approval = Approval(
                approved_by=tags.get("approval.approved_by", ""),
                evidence_run=tags.get("approval.evidence_run", ""),
                intended_use=tags.get("approval.intended_use", ""),
                limitations=tags.get("approval.limitations", ""),
                approved_at=tags.get("approval.approved_at", ""),
            )
        metrics: dict[str, float] = {}
        if mv.run_id:
            metrics = dict(self.client.get_run(mv.run_id).data.metrics)
        return VersionInfo(
            name=name,
            version=str(mv.version),
            run_id=mv.run_id,
            aliases=list(mv.aliases or []),
            approval=approval,
            metrics=metrics,
            tags=tags,
            description=mv.description or "",
        )

    def _version(self, name: str, version: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(name, version)
        except MlflowException as exc:
            raise InvalidInputError(f"no model version {name} v{version}") from exc

    def _history(self, name: str) -> list[str]:
        tags = self.client.get_registered_model(name).tags or {}
        return list(json.loads(tags.get(_HISTORY_TAG, "[]")))


# --- loading, warm per process ------------------------------------------------------
_loaded: dict[tuple[str, str, str, str], Any] = {}
_load_lock = threading.Lock()


def load_version(tracking_uri: str, name: str, version: str, device: str = "cpu") -> Any:
    """The segmenter of one registered version on `device` ("cpu" or "cuda"), loaded once
    per process and device (kept warm)."""
    import mlflow

    key = (tracking_uri, name, version, device)
    with _load_lock:
        if key not in _loaded:
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(tracking_uri)
            model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
            _loaded[key] = model.unwrap_python_model().segmenter.to(device)
        return _loaded[key]


def load_by_alias(
    tracking_uri: str, name: str, alias: str = CHAMPION, device: str = "cpu"
) -> tuple[Any, VersionInfo]:
    """The model behind `models:/<name>@<alias>`, loaded once per process, version and
    device."""
    registry = Registry(tracking_uri)
    version = registry._alias(name, alias)
    if version is None:
        raise NotApprovedError(f"{name} has no {alias} version")
    info = registry.show(name, version)
    return load_version(tracking_uri, name, version, device), info
