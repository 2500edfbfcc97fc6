"""Inference with the champion model, kept warm in the worker process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from prefect import task

from pacsflow.domain import InferenceResult, ModelRef
from pacsflow.governance.drift import body_intensity_stats, inference_features
from pacsflow.governance.usage import CpuClock
from tasks._runtime import ARCHIVE_RETRY_DELAYS, env, transient_only

ICH_MODEL = "pacsflow-ich"
NODULE_MODEL = "pacsflow-nodule"

# Where this process runs its models: "cpu" unless the runner that owns the process serves
# the gpu pool and a CUDA device is present (set once at start-up, by `use_device`).
_device = {"name": "cpu"}


def use_device(prefer_cuda: bool) -> str:
    """Choose the inference device of this worker process; returns "cuda" or "cpu"."""
    from models.device import inference_device

    _device["name"] = inference_device(prefer_cuda)
    return _device["name"]


def current_device() -> str:
    return _device["name"]


def _analyser(kind: str) -> Callable[..., tuple[InferenceResult, np.ndarray, Any]]:
    if kind == "nodule":
        from models.nodule.analyse import analyse_series as nodule_series

        return nodule_series
    from models.ich.analyse import analyse_series as ich_series

    return ich_series


def run_model(study_uid: str, series_uid: str, model: ModelRef) -> InferenceResult:
    """Run the given model version (the champion resolved once at the start of the run,
    so a promotion during the run cannot mix versions in one result) on one series, and
    keep its label map for the SEG."""
    from models.registry import load_version

    e = env()
    segmenter = load_version(
        e.settings.mlflow_tracking_uri, model.name, model.version, current_device()
    )
    with CpuClock() as clock:
        datasets, _origin = e.source.series_datasets(study_uid, series_uid)
        result, labels, volume = _analyser(segmenter.config.kind)(datasets, segmenter, model)
    np.savez_compressed(
        e.results_dir(study_uid, model) / "labels.npz",
        labels=labels,
        sop_uids=np.array(volume.sop_instance_uids),
    )
    result.seconds, result.cpu_seconds = round(clock.wall_s, 3), round(clock.process_s, 3)
    headers = [h for h in e.source.headers(study_uid) if h.series_uid == series_uid]
    result.features = inference_features(headers, body_intensity_stats(volume.hu))
    return result


@task(
    name="infer-ich",
    retries=len(ARCHIVE_RETRY_DELAYS),
    retry_delay_seconds=ARCHIVE_RETRY_DELAYS,
    retry_condition_fn=transient_only,
)
def infer_ich(study_uid: str, series_uid: str, model: ModelRef) -> InferenceResult:
    return run_model(study_uid, series_uid, model)


@task(
    name="infer-nodule",
    retries=len(ARCHIVE_RETRY_DELAYS),
    retry_delay_seconds=ARCHIVE_RETRY_DELAYS,
    retry_condition_fn=transient_only,
)
def infer_nodule(study_uid: str, series_uid: str, model: ModelRef) -> InferenceResult:
    return run_model(study_uid, series_uid, model)


@task(name="champion-version", retries=2, retry_delay_seconds=[2, 5])
def champion(name: str = ICH_MODEL) -> ModelRef:
    from models.registry import Registry

    registry = Registry(env().settings.mlflow_tracking_uri)
    version = registry.champion_version(name)
    if version is None:
        from models.registry import NotApprovedError

        raise NotApprovedError(f"{name} has no approved champion")
    info = registry.show(name, version)
    return ModelRef(name=name, version=version, run_id=info.run_id, approved=info.approved)


def warm_up() -> None:
    """Load the champion models before the first study arrives (called by the runner)."""
    from models.registry import load_by_alias

    for name in (ICH_MODEL, NODULE_MODEL):
        load_by_alias(env().settings.mlflow_tracking_uri, name, device=current_device())
