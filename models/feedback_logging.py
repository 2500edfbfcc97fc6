"""Radiologists' feedback metrics on the MLflow run of each model version.

The metrics (pacsflow.governance.feedback_metrics) are logged as `feedback.*` metrics on
the run that registered the version, so the registry shows, beside the held-out
evaluation, how the version does in practice. Each logging is one more point of each
metric's history, with the number of decisions behind it as the step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from models.registry import Registry
from pacsflow.errors import InvalidInputError
from pacsflow.governance.feedback_metrics import FeedbackMetrics


@dataclass(frozen=True)
class LoggedFeedback:
    model_name: str
    model_version: str
    run_id: str | None
    metrics: int  # how many metrics were logged (0 when skipped)
    skipped: str | None = None  # why nothing was logged


def log_feedback_metrics(
    tracking_uri: str, metrics: Iterable[FeedbackMetrics]
) -> list[LoggedFeedback]:
    """Log each version's feedback metrics on its registered run. A version the registry
    does not know, or one without a run, is skipped with the reason."""
    from mlflow.entities import Metric

    registry = Registry(tracking_uri)
    out = []
    for m in metrics:
        try:
            info = registry.show(m.model_name, m.model_version)
        except InvalidInputError as exc:
            out.append(LoggedFeedback(m.model_name, m.model_version, None, 0, str(exc)))
            continue
        if not info.run_id:
            reason = "the version has no MLflow run"
            out.append(LoggedFeedback(m.model_name, m.model_version, None, 0, reason))
            continue
        now_ms = int(time.time() * 1000)
        values = m.metric_values()
        registry.client.log_batch(
            info.run_id,
            metrics=[Metric(k, v, now_ms, m.decisions) for k, v in sorted(values.items())],
        )
        out.append(LoggedFeedback(m.model_name, m.model_version, info.run_id, len(values)))
    return out
