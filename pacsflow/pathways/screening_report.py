"""The screening coordinator's report of one cohort run: a CSV (one row per patient) and a
self-contained HTML page with two plots (matplotlib, Agg canvas, no display): the cohort by
criterion, and the enrolled patients by weeks overdue.

These files are for the coordinator and hold patient data (MRN, age, smoking history);
they are written with owner-only permissions under ``var/reports/screening/<run>/``.
Logs and Prefect artifacts get `CohortCounts` only.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pacsflow.config import Settings
from pacsflow.pathways.cohort import (
    OVERDUE_BUCKETS,
    CohortCounts,
    OutreachState,
    PatientAssessment,
    PatientStatus,
    SweepWindow,
)
from pacsflow.pathways.screening_rules import ScreeningProgram, age_on

PROGRAM_TITLE = {
    ScreeningProgram.LUNG_CANCER: "Lung cancer, LDCT (USPSTF 2021)",
    ScreeningProgram.AAA: "AAA, one-time ultrasound (USPSTF 2019)",
}
CSV_COLUMNS = (
    "patient_id",
    "ehr_patient_id",
    "status",
    "detail",
    "last_chest_ct",
    "last_study_uid",
    "last_accession",
    "birth_date",
    "age",
    "sex",
    "smoking_status",
    "pack_years",
    "quit_date",
    "enrolled",
    "completed",
    "lung_eligible",
    "lung_reasons",
    "lung_outreach",
    "aaa_eligible",
    "aaa_reasons",
    "aaa_outreach",
    "next_lung_ct_due",
    "weeks_overdue",
    "overdue_listed",
)


@dataclass(frozen=True)
class ReportFiles:
    directory: Path
    csv: Path
    html: Path


def reports_dir(settings: Settings) -> Path:
    return settings.screening.reports_dir or settings.paths.var_dir / "reports" / "screening"


def _answer(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "undecided"}[value]


def csv_row(row: PatientAssessment, as_of: date) -> dict[str, Any]:
    facts = row.facts
    out: dict[str, Any] = {key: "" for key in CSV_COLUMNS}
    out |= {
        "patient_id": row.patient_id,
        "ehr_patient_id": row.ehr_patient_id or "",
        "status": row.status.value,
        "detail": row.detail,
        "last_chest_ct": row.last_exam.study_date.isoformat(),
        "last_study_uid": row.last_exam.study_uid,
        "last_accession": row.last_exam.accession_number or "",
        "next_lung_ct_due": row.next_due.isoformat() if row.next_due else "",
        "weeks_overdue": "" if row.weeks_overdue is None else row.weeks_overdue,
        "overdue_listed": "yes" if row.overdue_listed else "",
    }
    if facts is not None:
        out |= {
            "birth_date": facts.birth_date.isoformat() if facts.birth_date else "",
            "age": age_on(facts.birth_date, as_of) if facts.birth_date else "",
            "sex": facts.sex.value,
            "smoking_status": facts.smoking_status.value,
            "pack_years": "" if facts.pack_years is None else f"{facts.pack_years:g}",
            "quit_date": facts.quit_date.isoformat() if facts.quit_date else "",
            "enrolled": " ".join(sorted(facts.enrolled_programs)),
            "completed": " ".join(sorted(facts.completed_programs)),
        }
    for program, prefix in ((ScreeningProgram.LUNG_CANCER, "lung"), (ScreeningProgram.AAA, "aaa")):
        eligibility = row.eligibility.get(program)
        if eligibility is None:
            continue
        out[f"{prefix}_eligible"] = _answer(eligibility.eligible)
        out[f"{prefix}_reasons"] = "; ".join(str(r) for r in eligibility.reasons)
        out[f"{prefix}_outreach"] = row.outreach.get(program, OutreachState.NONE).value
    return out


def write_csv(rows: list[PatientAssessment], path: Path, as_of: date) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for row in sorted(rows, key=lambda r: r.patient_id):
            writer.writerow(csv_row(row, as_of))
    return path


# ---- plots --------------------------------------------------------------------------------


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def criteria_plot(counts: CohortCounts) -> str:
    """Per programme: how many of the assessed patients pass, fail or lack each criterion,
    then how many are eligible and how many need outreach (base64 PNG)."""
    fig = Figure(figsize=(8.0, 2.2 + 1.6 * len(counts.programs)), layout="constrained")
    axes = fig.subplots(len(counts.programs), 1, squeeze=False)[:, 0]
    for ax, (program, c) in zip(axes, counts.programs.items(), strict=True):
        labels = list(c.criteria)
        passed = [c.criteria[k]["passed"] for k in labels]
        failed = [c.criteria[k]["failed"] for k in labels]
        missing = [c.criteria[k]["missing"] for k in labels]
        labels += ["eligible", "needs outreach"]
        passed += [c.eligible, c.needs_outreach]
        failed += [c.not_eligible, 0]
        missing += [c.undecidable, 0]
        y = list(range(len(labels)))[::-1]
        ax.barh(y, passed, color="#2a7f62", label="passes / yes")
        ax.barh(y, failed, left=passed, color="#b3b3b3", label="fails / no")
        ax.barh(
            y,
            missing,
            left=[p + f for p, f in zip(passed, failed, strict=True)],
            color="#e0a526",
            label="missing fact",
        )
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_xlabel("patients")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(PROGRAM_TITLE[program], fontsize=9)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Cohort by criterion", fontsize=10)
    return _png(fig)


def overdue_plot(counts: CohortCounts) -> str:
    """Enrolled patients whose next lung screening CT is past due, by weeks late."""
    fig = Figure(figsize=(7.0, 3.2))
    ax = fig.subplots()
    labels = [label for label, _, _ in OVERDUE_BUCKETS]
    values = [counts.overdue_weeks.get(label, 0) for label in labels]
    ax.bar(range(len(labels)), values, color="#c0504d")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8, rotation=20)
    ax.set_ylabel("patients")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Enrolled in lung screening, next CT past due: weeks overdue", fontsize=10)
    return _png(fig)


# ---- HTML ---------------------------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f0f0f0; }
td.n { text-align: right; }
.note { color: #555; font-size: 0.9em; }
"""


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="n">{v}</td>' if isinstance(v, int) else f"<td>{html.escape(str(v))}</td>"
            for v in row
        )
        body.append(f"<tr>{cells}</tr>")
    if not rows:
        body.append(f'<tr><td colspan="{len(headers)}">none</td></tr>')
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_html(
    rows: list[PatientAssessment],
    counts: CohortCounts,
    *,
    window: SweepWindow,
    as_of: date,
    run_label: str,
    dry_run: bool = False,
) -> str:
    by_csv = {r.patient_id: csv_row(r, as_of) for r in rows}
    program_rows = [
        [
            PROGRAM_TITLE[p],
            c.eligible,
            c.not_eligible,
            c.undecidable,
            c.enrolled,
            c.needs_outreach,
            c.flagged_now,
            c.already_flagged,
        ]
        for p, c in counts.programs.items()
    ]
    outreach = [
        [
            r.patient_id,
            by_csv[r.patient_id]["age"],
            by_csv[r.patient_id]["sex"],
            by_csv[r.patient_id]["smoking_status"],
            by_csv[r.patient_id]["pack_years"],
            PROGRAM_TITLE[p],
            r.outreach.get(p, OutreachState.NONE).value,
            r.flag_references.get(p, ""),
        ]
        for r in sorted(rows, key=lambda r: r.patient_id)
        for p in ScreeningProgram
        if r.needs_outreach(p)
    ]
    late = [
        [
            r.patient_id,
            r.last_exam.study_date.isoformat(),
            r.next_due.isoformat() if r.next_due else "",
            r.weeks_overdue if r.weeks_overdue is not None else "",
        ]
        for r in sorted(rows, key=lambda r: (-(r.weeks_overdue or 0), r.patient_id))
        if r.overdue_listed
    ]
    undecided = [
        [r.patient_id, PROGRAM_TITLE[p], ", ".join(e.missing())]
        for r in sorted(rows, key=lambda r: r.patient_id)
        for p, e in r.eligibility.items()
        if e.eligible is None
    ]
    unmatched = [
        [r.patient_id, r.status.value, r.detail, r.last_exam.study_date.isoformat()]
        for r in sorted(rows, key=lambda r: r.patient_id)
        if r.status != PatientStatus.ASSESSED
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    flagging = (
        "Dry run: nothing was written to the EHR."
        if dry_run
        else "Eligible, not enrolled patients were flagged in the EHR (FHIR Flag, with a "
        "coordinator Task when configured); a patient is flagged once per programme."
    )
    cohort_table = _table(
        ["patients", "assessed", "not in EHR", "EHR refused", "overdue listed"],
        [
            [
                counts.patients,
                counts.assessed,
                counts.not_in_ehr,
                counts.ehr_refused,
                counts.overdue_listed,
            ]
        ],
    )
    programmes_table = _table(
        [
            "programme",
            "eligible",
            "not eligible",
            "undecided",
            "enrolled",
            "needs outreach",
            "flagged now",
            "already flagged",
        ],
        program_rows,
    )
    outreach_table = _table(
        ["MRN", "age", "sex", "smoking", "pack-years", "programme", "outreach", "EHR flag"],
        outreach,
    )
    late_table = _table(["MRN", "last chest CT", "next CT due", "weeks overdue"], late)
    undecided_table = _table(["MRN", "programme", "missing"], undecided)
    unmatched_table = _table(["MRN", "status", "detail", "last chest CT"], unmatched)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Screening cohort {html.escape(run_label)}</title><style>{_STYLE}</style></head>
<body>
<h1>Screening cohort report</h1>
<p class="note">Run {html.escape(run_label)}, as of {as_of.isoformat()}, generated {generated}.
Chest CTs swept: StudyDate {window.start.isoformat()} to {window.end.isoformat()}
(sweep <code>{html.escape(window.name)}</code>); the cohort is every patient the sweep
has found so far. {flagging} Contains patient data: for the screening coordinator only.</p>
<h2>Cohort</h2>
{cohort_table}
{programmes_table}
<img alt="cohort by criterion" src="data:image/png;base64,{criteria_plot(counts)}">
<h2>Eligible, not enrolled: outreach</h2>
{outreach_table}
<h2>Enrolled in lung screening, next CT overdue</h2>
<img alt="overdue by weeks" src="data:image/png;base64,{overdue_plot(counts)}">
{late_table}
<h2>Undecided: facts missing in the EHR</h2>
{undecided_table}
<h2>Not assessed</h2>
{unmatched_table}
<p class="note">USPSTF 2021 lung cancer screening: 50-80 years, &ge; 20 pack-years, smokes or
quit within 15 years. USPSTF 2019 AAA: men 65-75 who ever smoked, once. Next CT due: last
chest CT plus the Lung-RADS v2022 interval of the nodule pathway's result (12 months when
unknown).</p>
</body></html>
"""


def write_report(
    rows: list[PatientAssessment],
    counts: CohortCounts,
    directory: Path,
    *,
    window: SweepWindow,
    as_of: date,
    run_label: str,
    dry_run: bool = False,
) -> ReportFiles:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)  # patient data: the coordinator's eyes only
    csv_path = write_csv(rows, directory / "cohort.csv", as_of)
    html_path = directory / "report.html"
    html_path.write_text(
        render_html(rows, counts, window=window, as_of=as_of, run_label=run_label, dry_run=dry_run),
        encoding="utf-8",
    )
    for path in (csv_path, html_path):
        os.chmod(path, 0o600)
    return ReportFiles(directory=directory, csv=csv_path, html=html_path)
