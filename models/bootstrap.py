"""Put the shipped weights into a registry as approved champions, once.

For each model without a champion: log an evaluation run (the shipped held-out metrics,
the evaluation JSON as artifact), register the shipped weights, approve the version with
that run as evidence, and promote it. A version already registered from the same weights
(same SHA-256) is reused, so a bootstrap interrupted half-way finishes on the next call
instead of registering a second copy.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from models.cards import model_card, read_json
from models.catalogue import LIMITATIONS, MODELS, WEIGHTS_DIR, ModelSpec
from models.registry import Approval, Registry, VersionInfo
from pacsflow.errors import InvalidInputError

log = logging.getLogger(__name__)

WEIGHTS_SHA_TAG = "pacsflow.weights_sha256"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log_evaluation_run(registry: Registry, spec: ModelSpec, evaluation: Path) -> str:
    """An MLflow run holding the held-out evaluation of the shipped weights; its id is
    the evidence an approval points at."""
    import mlflow

    data = read_json(evaluation)
    metrics = {k: float(v) for k, v in data.get("metrics", {}).items() if v is not None}
    experiment_id = registry.experiment_id(f"{spec.registered_name}-evaluation")
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{spec.key}-heldout") as run:
        mlflow.log_metrics(metrics)
        mlflow.log_params(
            {
                "n_studies": data.get("n_studies"),
                "matrix": data.get("matrix"),
                "seed": data.get("seed"),
                "weights_sha256": data.get("weights_sha256"),
            }
        )
        mlflow.set_tag("pacsflow.kind", "evaluation")
        mlflow.log_artifact(str(evaluation), artifact_path="evaluation")
    return str(run.info.run_id)


def _shipped_version(registry: Registry, name: str, digest: str) -> VersionInfo | None:
    same = [v for v in registry.versions(name) if v.tags.get(WEIGHTS_SHA_TAG) == digest]
    return same[-1] if same else None


def ensure_model(
    registry: Registry,
    spec: ModelSpec,
    *,
    approver: str = "pacsflow-demo",
    weights_dir: Path = WEIGHTS_DIR,
) -> VersionInfo:
    name = spec.registered_name
    champion = registry.champion_version(name)
    if champion is not None:
        return registry.show(name, champion)
    weights, config, evaluation = (
        spec.weights(weights_dir),
        spec.config(weights_dir),
        spec.evaluation(weights_dir),
    )
    for path in (weights, config, evaluation):
        if not path.is_file():
            raise InvalidInputError(f"shipped model file missing: {path}")
    digest = sha256(weights)
    info = _shipped_version(registry, name, digest)
    if info is None:
        data = read_json(evaluation)
        info = registry.register(
            name,
            weights=weights,
            config=config,
            model_card=model_card(spec, weights_dir),
            metrics={k: float(v) for k, v in data.get("metrics", {}).items() if v is not None},
            params={"weights_sha256": digest, **read_json(config)},
            evaluation_artifacts={"heldout": evaluation},
        )
        registry.client.set_model_version_tag(name, info.version, WEIGHTS_SHA_TAG, digest)
        log.info("registered %s v%s from %s", name, info.version, weights)
    if not info.approved:
        evidence = log_evaluation_run(registry, spec, evaluation)
        registry.approve(
            name,
            info.version,
            Approval(
                approved_by=approver,
                evidence_run=evidence,
                intended_use=spec.intended_use,
                limitations=LIMITATIONS,
            ),
        )
    promoted = registry.promote(name, info.version)
    log.info("%s v%s is champion", name, promoted.version)
    return promoted


def ensure_registered(
    tracking_uri: str,
    *,
    approver: str = "pacsflow-demo",
    weights_dir: Path = WEIGHTS_DIR,
    artifact_root: Path | None = None,
) -> dict[str, VersionInfo]:
    """Each shipped model registered, approved and champion; idempotent. ``artifact_root``:
    where the files go when the store is a database other than SQLite (PostgreSQL)."""
    registry = Registry(tracking_uri, artifact_root=artifact_root)
    return {
        key: ensure_model(registry, spec, approver=approver, weights_dir=weights_dir)
        for key, spec in MODELS.items()
    }
