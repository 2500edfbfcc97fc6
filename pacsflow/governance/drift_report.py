"""A drift check's outputs: a self-contained HTML report with plots (matplotlib, Agg, no
display), its JSON beside it, and the alert (a POST to each notification endpoint plus an
audit entry "drift.alert") when a threshold was crossed.

The report says what to do about an alert: roll the model back to the previous approved
champion with `pacsflow models rollback <model>` while the change is investigated.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pacsflow.config import Settings
from pacsflow.governance.audit import AuditLog
from pacsflow.governance.drift import DriftRecord, DriftReport, FeatureDrift, ReferenceProfile

log = logging.getLogger(__name__)

UNITS = {
    "score": "study probability",
    "slice_thickness_mm": "mm",
    "kvp": "kV",
    "image_mean_hu": "HU",
    "image_std_hu": "HU",
    "latency_s": "s",
}


def reports_dir(settings: Settings) -> Path:
    return settings.drift.reports_dir or settings.paths.var_dir / "reports" / "drift"


def response_text(model_name: str) -> str:
    return (
        f"If the alert reflects a change the model was not validated for (a new scanner, "
        f"kernel or protocol; noisier images; more studies refused), roll the champion back "
        f"to the previous approved version with `pacsflow models rollback {model_name}` "
        f"while it is investigated, or stop routing the new source to the pathway; "
        f"re-evaluate on data like the new data before promoting a version again."
    )


# --- plots ----------------------------------------------------------------------------------
def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def numeric_plot(name: str, reference: Sequence[float], current: Sequence[float]) -> str:
    """Overlaid histograms (density) of the reference and the current window, base64 PNG."""
    fig = Figure(figsize=(4.2, 2.6))
    ax = fig.add_subplot()
    both = np.concatenate([np.asarray(reference, float), np.asarray(current, float)])
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 25)
    if len(reference):
        ax.hist(reference, bins=bins, density=True, alpha=0.5, label="reference", color="#4a7ab0")
    if len(current):
        ax.hist(current, bins=bins, density=True, alpha=0.5, label="recent", color="#d35400")
    ax.set_xlabel(f"{name} ({UNITS.get(name, '')})")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return _png(fig)


def categorical_plot(name: str, reference: dict[str, float], current: dict[str, float]) -> str:
    categories = sorted(set(reference) | set(current))
    fig = Figure(figsize=(4.2, 2.6))
    ax = fig.add_subplot()
    x = np.arange(len(categories))
    ax.bar(x - 0.2, [reference.get(c, 0.0) for c in categories], 0.4, label="reference")
    ax.bar(x + 0.2, [current.get(c, 0.0) for c in categories], 0.4, label="recent")
    ax.set_xticks(x, categories, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("share of studies")
    ax.legend(fontsize=7)
    return _png(fig)


# --- HTML -----------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.2g}" if abs(value) < 10**-digits and value != 0 else f"{value:.{digits}f}"


def _feature_row(f: FeatureDrift) -> str:
    state = '<b class="alert">ALERT</b>' if f.alert else "ok"
    if f.psi is None:
        state = "not compared"
    return (
        f"<tr><td>{html.escape(f.name)}</td><td>{f.kind}</td><td>{f.reference_count}</td>"
        f"<td>{f.current_count}</td><td>{_fmt(f.psi)}</td><td>{_fmt(f.ks_statistic)}</td>"
        f"<td>{_fmt(f.ks_pvalue)}</td><td>{state}</td><td>{html.escape(f.note)}</td></tr>"
    )


def render_html(
    report: DriftReport,
    profile: ReferenceProfile,
    records: Sequence[DriftRecord],
    *,
    model_name: str,
) -> str:
    """The report as one HTML file (plots inline as PNG data URIs)."""
    analysed = [r for r in records if not r.validation_failed]
    plots = []
    for f in report.features:
        if f.kind == "numeric" and f.name in profile.numeric:
            current = [float(v) for r in analysed if (v := r.value(f.name)) is not None]
            image = numeric_plot(f.name, profile.numeric[f.name].sample, current)
        elif f.kind == "categorical":
            image = categorical_plot(f.name, dict(f.reference_summary), dict(f.current_summary))
        else:
            continue
        plots.append(
            f'<figure><img alt="{html.escape(f.name)}" src="data:image/png;base64,{image}">'
            f"<figcaption>{html.escape(f.name)}</figcaption></figure>"
        )
    verdict = {
        "ok": '<p class="ok">No drift past the thresholds.</p>',
        "alert": '<p class="alert">Drift past the thresholds:</p><ul>'
        + "".join(f"<li>{html.escape(a)}</li>" for a in report.alerts)
        + "</ul>",
        "insufficient_data": f"<p>Only {report.studies} recent studies: too few to compare "
        f"(minimum {int(report.thresholds['min_studies'])}).</p>",
    }[report.status]
    thresholds = ", ".join(f"{k} {v:g}" for k, v in report.thresholds.items())
    window = f"{report.window_start or '-'} .. {report.window_end or '-'}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Drift report: {html.escape(model_name)} ({html.escape(report.pathway)})</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; }}
table {{ border-collapse: collapse; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .25rem .5rem; text-align: left; }}
.alert {{ color: #b00020; }} .ok {{ color: #1e6b2c; }}
figure {{ display: inline-block; margin: .5rem; }} figcaption {{ font-size: .8rem; color: #556; }}
</style></head><body>
<h1>Drift report: {html.escape(model_name)}, pathway {html.escape(report.pathway)}</h1>
<p>Created {html.escape(report.created_at)}. Recent window: {report.studies} studies
({html.escape(window)}), model versions {html.escape(", ".join(report.model_versions) or "-")}.
Reference: {html.escape(profile.source)} ({profile.records} records).</p>
{verdict}
<h2>Response</h2>
<p id="response">{html.escape(response_text(model_name))}</p>
<h2>Features</h2>
<table id="features"><thead><tr><th>feature</th><th>kind</th><th>reference n</th><th>recent n</th>
<th>PSI</th><th>KS D</th><th>KS p</th><th>state</th><th>note</th></tr></thead><tbody>
{"".join(_feature_row(f) for f in report.features)}
</tbody></table>
<p>Not analysed (validation failures): {_fmt(report.validation_failure_rate)} of recent studies,
reference {_fmt(report.reference_validation_failure_rate)}. Inference latency p95:
{_fmt(report.latency_p95_s)} s, reference {_fmt(report.reference_latency_p95_s)} s.</p>
<p>Thresholds: {html.escape(thresholds)}.</p>
<h2>Distributions</h2>
{"".join(plots)}
</body></html>
"""


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    json: Path


def write_report(
    report: DriftReport,
    profile: ReferenceProfile,
    records: Sequence[DriftRecord],
    out_dir: Path,
    *,
    model_name: str,
) -> ReportFiles:
    """<out_dir>/<UTC time>-<pathway>.html and .json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{report.pathway or 'all'}"
    html_path, json_path = out_dir / f"{stem}.html", out_dir / f"{stem}.json"
    html_path.write_text(render_html(report, profile, records, model_name=model_name), "utf-8")
    data = {**report.to_json(), "model": model_name, "response": response_text(model_name)}
    json_path.write_text(json.dumps(data, indent=1, default=str), "utf-8")
    return ReportFiles(html=html_path, json=json_path)


# --- alert ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlertOutcome:
    audit_entry_id: int
    notified: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def alert_body(report: DriftReport, *, model_name: str, report_path: Path) -> dict[str, Any]:
    return {
        "event": "drift_alert",
        "model": model_name,
        "pathway": report.pathway,
        "model_versions": list(report.model_versions),
        "studies": report.studies,
        "alerts": list(report.alerts),
        "report": str(report_path),
        "response": f"pacsflow models rollback {model_name}",
        "created_at": report.created_at,
    }


def send_drift_alert(
    settings: Settings,
    audit: AuditLog,
    report: DriftReport,
    *,
    model_name: str,
    report_path: Path,
    timeout_s: float = 10.0,
) -> AlertOutcome:
    """POST the alert to every notification endpoint, then audit it ("drift.alert") with
    who was told and who could not be. An unreachable endpoint does not stop the others."""
    body = alert_body(report, model_name=model_name, report_path=report_path)
    notified: list[str] = []
    failed: list[str] = []
    for url in settings.notify.endpoints:
        try:
            response = httpx.post(url, json=body, timeout=timeout_s)
        except httpx.HTTPError as exc:
            failed.append(f"{url}: {type(exc).__name__}")
            continue
        if response.status_code >= 400:
            failed.append(f"{url}: HTTP {response.status_code}")
        else:
            notified.append(url)
    if failed:
        log.warning("drift alert for %s not delivered to: %s", model_name, "; ".join(failed))
    entry = audit.append(
        "pacsflow:drift-monitor",
        "drift.alert",
        model_name,
        {
            "pathway": report.pathway,
            "model_versions": list(report.model_versions),
            "studies": report.studies,
            "alerts": list(report.alerts),
            "report": str(report_path),
            "notified": notified,
            "failed": failed,
        },
    )
    return AlertOutcome(audit_entry_id=entry.id, notified=notified, failed=failed)
