"""Inference with the champion model, kept warm in the worker process."""

from __future__ import annotations

import time

import numpy as np
from prefect import task

from pacsflow.domain import InferenceResult, ModelRef
from tasks._runtime import env, transient_only

ICH_MODEL = "pacsflow-ich"


@task(
    name="infer-ich", retries=3, retry_delay_seconds=[2, 5, 10], retry_condition_fn=transient_only
)
def infer_ich(study_uid: str, series_uid: str, model: ModelRef) -> InferenceResult:
    """Run the given model version (the champion resolved once at the start of the run,
    so a promotion during the run cannot mix versions in one result)."""
    from models.ich.analyse import analyse_series
    from models.registry import load_version

    e = env()
    segmenter = load_version(e.settings.mlflow_tracking_uri, model.name, model.version)
    started = time.perf_counter()
    datasets, _origin = e.source.series_datasets(study_uid, series_uid)
    result, labels, volume = analyse_series(datasets, segmenter, model)
    np.savez_compressed(
        e.results_dir(study_uid, model) / "labels.npz",
        labels=labels,
        sop_uids=np.array(volume.sop_instance_uids),
    )
    result.seconds = time.perf_counter() - started
    return result


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

    load_by_alias(env().settings.mlflow_tracking_uri, ICH_MODEL)
