"""Shadow mode: how a challenger model version agrees with the champion on the same studies,
and how each does against ground truth where it is known. Evidence for an approval decision.

Both versions read the same series through the same code path (series selection, header
validation, inference, the pathway's study-level decision); each reading is stored as a
PathwayRun of pathway ``<pathway>:shadow`` with its model version, never written back.
This module pairs the two versions' readings study by study and computes:

- agreement on the study-level call: finding present (yes/no) and the priority the
  pathway would assign, with Cohen's kappa for the finding call (chance-corrected);
- per version, against ground truth (finding present or not): sensitivity = TP / (TP + FN),
  specificity = TN / (TN + FP). A reading without a call (not analysed) counts in neither.

No patient data: study UIDs, versions, calls and scores only.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pacsflow.errors import InvalidInputError

SHADOW_SUFFIX = ":shadow"
CSV_COLUMNS = (
    "study_uid",
    "truth_finding",
    "champion_version",
    "champion_finding",
    "champion_priority",
    "champion_score",
    "challenger_version",
    "challenger_finding",
    "challenger_priority",
    "challenger_score",
    "agree_finding",
    "agree_priority",
)


def shadow_pathway(pathway: str) -> str:
    """The PathwayRun.pathway of shadow readings: kept apart from the live pathway's rows, so
    the worklist, drift checks and "already processed" tests never see them."""
    if pathway.endswith(SHADOW_SUFFIX):
        raise InvalidInputError(f"{pathway!r} is already a shadow pathway")
    return pathway + SHADOW_SUFFIX


class ShadowReading(BaseModel):
    """One model version's study-level call on one study."""

    model_config = ConfigDict(frozen=True)

    study_uid: str
    model_version: str
    priority: str  # the pathway's priority (critical / urgent / routine / review / ...)
    finding_present: bool | None  # None: not analysed, no call
    score: float | None = None
    series_uid: str | None = None


class StudyAgreement(BaseModel):
    model_config = ConfigDict(frozen=True)

    study_uid: str
    champion: ShadowReading
    challenger: ShadowReading
    truth: bool | None = None

    @property
    def agree_finding(self) -> bool | None:
        a, b = self.champion.finding_present, self.challenger.finding_present
        return None if a is None or b is None else a == b

    @property
    def agree_priority(self) -> bool:
        return self.champion.priority == self.challenger.priority


class Performance(BaseModel):
    """Confusion counts of one version against ground truth."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def add(self, call: bool | None, truth: bool | None) -> None:
        if call is None or truth is None:
            return
        if truth:
            self.tp += int(call)
            self.fn += int(not call)
        else:
            self.fp += int(call)
            self.tn += int(not call)

    @property
    def sensitivity(self) -> float | None:
        positives = self.tp + self.fn
        return self.tp / positives if positives else None

    @property
    def specificity(self) -> float | None:
        negatives = self.tn + self.fp
        return self.tn / negatives if negatives else None


def cohen_kappa(pairs: Iterable[tuple[bool, bool]]) -> float | None:
    """Cohen's kappa of two raters' yes/no calls; None without pairs or when both raters
    are constant and agree (chance agreement 1: kappa undefined)."""
    items = list(pairs)
    n = len(items)
    if n == 0:
        return None
    observed = sum(a == b for a, b in items) / n
    a_yes = sum(a for a, _ in items) / n
    b_yes = sum(b for _, b in items) / n
    expected = a_yes * b_yes + (1 - a_yes) * (1 - b_yes)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1 - expected)


class AgreementReport(BaseModel):
    pathway: str
    model_name: str
    champion_version: str
    challenger_version: str
    studies: list[StudyAgreement] = Field(default_factory=list)
    unpaired: int = 0  # studies read by only one of the versions

    def performance(self, role: str) -> Performance:
        perf = Performance()
        for s in self.studies:
            reading = s.champion if role == "champion" else s.challenger
            perf.add(reading.finding_present, s.truth)
        return perf

    def disagreements(self) -> list[StudyAgreement]:
        return [s for s in self.studies if s.agree_finding is False or not s.agree_priority]

    def metrics(self) -> dict[str, float]:
        """Defined metrics only (a rate without a denominator is left out, not 0)."""
        n = len(self.studies)
        called = [
            (s.champion.finding_present, s.challenger.finding_present)
            for s in self.studies
            if s.champion.finding_present is not None and s.challenger.finding_present is not None
        ]
        out: dict[str, float] = {
            "studies_paired": float(n),
            "studies_unpaired": float(self.unpaired),
            "studies_with_truth": float(sum(s.truth is not None for s in self.studies)),
            "disagreements": float(len(self.disagreements())),
        }
        if called:
            pairs = [(bool(a), bool(b)) for a, b in called]
            out["agreement_finding"] = sum(a == b for a, b in pairs) / len(pairs)
            out["champion_positive_rate"] = sum(a for a, _ in pairs) / len(pairs)
            out["challenger_positive_rate"] = sum(b for _, b in pairs) / len(pairs)
            kappa = cohen_kappa(pairs)
            if kappa is not None:
                out["kappa_finding"] = kappa
        if n:
            out["agreement_priority"] = sum(s.agree_priority for s in self.studies) / n
        for role in ("champion", "challenger"):
            perf = self.performance(role)
            if perf.sensitivity is not None:
                out[f"{role}_sensitivity"] = perf.sensitivity
            if perf.specificity is not None:
                out[f"{role}_specificity"] = perf.specificity
        return out


def compare(
    *,
    pathway: str,
    model_name: str,
    champion: Iterable[ShadowReading],
    challenger: Iterable[ShadowReading],
    truth: Mapping[str, bool] | None = None,
) -> AgreementReport:
    """Pair the two versions' readings by study (each version read once per study)."""
    first = {r.study_uid: r for r in champion}
    second = {r.study_uid: r for r in challenger}
    versions = {r.model_version for r in first.values()}, {r.model_version for r in second.values()}
    if len(versions[0]) > 1 or len(versions[1]) > 1:
        raise InvalidInputError(
            f"readings of several versions: {sorted(versions[0] | versions[1])}"
        )
    champion_version = next(iter(versions[0]), "")
    challenger_version = next(iter(versions[1]), "")
    truth = truth or {}
    paired = sorted(set(first) & set(second))
    return AgreementReport(
        pathway=pathway,
        model_name=model_name,
        champion_version=champion_version,
        challenger_version=challenger_version,
        studies=[
            StudyAgreement(
                study_uid=uid, champion=first[uid], challenger=second[uid], truth=truth.get(uid)
            )
            for uid in paired
        ],
        unpaired=len(set(first) ^ set(second)),
    )


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return value


def write_csv(report: AgreementReport, path: Path) -> Path:
    """One row per paired study, disagreements first."""
    rows = sorted(
        report.studies,
        key=lambda s: (s.agree_finding is not False and s.agree_priority, s.study_uid),
    )
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for s in rows:
            writer.writerow(
                [
                    _cell(v)
                    for v in (
                        s.study_uid,
                        s.truth,
                        s.champion.model_version,
                        s.champion.finding_present,
                        s.champion.priority,
                        s.champion.score,
                        s.challenger.model_version,
                        s.challenger.finding_present,
                        s.challenger.priority,
                        s.challenger.score,
                        s.agree_finding,
                        s.agree_priority,
                    )
                ]
            )
    return path


def summary_markdown(report: AgreementReport) -> str:
    m = report.metrics()

    def pct(key: str) -> str:
        return f"{100 * m[key]:.1f} %" if key in m else "n/a"

    kappa = f" (kappa {m['kappa_finding']:.3f})" if "kappa_finding" in m else ""
    lines = [
        f"# Shadow mode: {report.model_name} v{report.challenger_version} (challenger) "
        f"beside v{report.champion_version} (champion)",
        "",
        f"Pathway `{report.pathway}`: {len(report.studies)} studies read by both versions "
        f"({int(m['studies_with_truth'])} with ground truth), {report.unpaired} by one only.",
        "",
        "| | champion | challenger |",
        "| --- | ---: | ---: |",
        f"| sensitivity | {pct('champion_sensitivity')} | {pct('challenger_sensitivity')} |",
        f"| specificity | {pct('champion_specificity')} | {pct('challenger_specificity')} |",
        f"| finding called | {pct('champion_positive_rate')} | {pct('challenger_positive_rate')} |",
        "",
        f"Agreement: finding {pct('agreement_finding')}{kappa}; priority "
        f"{pct('agreement_priority')}; {int(m['disagreements'])} disagreement(s).",
        "",
        "Nothing the challenger produced was written back (no SR, ORU, worklist or FHIR).",
    ]
    return "\n".join(lines)


def truth_from_synthetic(folder: Path) -> dict[str, bool]:
    """Ground truth of synthetic studies written by pacsflow.synth (``ground_truth.json``
    beside each study): study UID -> has a lesion."""
    from pacsflow.synth.truth import TRUTH_FILENAME, load_truth

    found: dict[str, bool] = {}
    for path in sorted(Path(folder).rglob(TRUTH_FILENAME)):
        truth = load_truth(path)
        found[truth.study_uid] = bool(truth.lesions)
    return found
