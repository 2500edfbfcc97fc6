"""The shadow-mode agreement report: pairing, agreement, kappa, sensitivity/specificity."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pacsflow.errors import InvalidInputError
from pacsflow.governance.shadow_report import (
    Performance,
    ShadowReading,
    cohen_kappa,
    compare,
    shadow_pathway,
    summary_markdown,
    truth_from_synthetic,
    write_csv,
)


def r(uid: str, version: str, finding: bool | None, priority: str = "") -> ShadowReading:
    return ShadowReading(
        study_uid=uid,
        model_version=version,
        finding_present=finding,
        priority=priority or ("critical" if finding else "routine"),
        score=0.9 if finding else 0.1,
    )


def test_shadow_pathway_name() -> None:
    assert shadow_pathway("stroke_triage") == "stroke_triage:shadow"
    with pytest.raises(InvalidInputError):
        shadow_pathway("stroke_triage:shadow")


def test_kappa() -> None:
    assert cohen_kappa([]) is None
    assert cohen_kappa([(True, True), (False, False)]) == 1.0
    assert cohen_kappa([(True, True), (True, True)]) is None  # both constant: undefined
    assert cohen_kappa([(True, False), (False, True)]) == -1.0
    # 20 pairs: 8 yes/yes, 2 yes/no, 1 no/yes, 9 no/no: po 0.85, pe 0.5 -> 0.7
    pairs = [(True, True)] * 8 + [(True, False)] * 2 + [(False, True)] + [(False, False)] * 9
    assert cohen_kappa(pairs) == pytest.approx(0.7)


def test_performance() -> None:
    perf = Performance()
    for call, truth in [(True, True), (False, True), (False, False), (True, False), (None, True)]:
        perf.add(call, truth)
    perf.add(True, None)
    assert (perf.tp, perf.fn, perf.tn, perf.fp) == (1, 1, 1, 1)
    assert perf.sensitivity == 0.5 and perf.specificity == 0.5
    assert Performance().sensitivity is None


def test_compare_pairs_by_study_and_measures_both_versions(tmp_path: Path) -> None:
    champion = [r("a", "1", True), r("b", "1", True), r("c", "1", False), r("d", "1", None)]
    champion.append(r("only-champion", "1", True))
    challenger = [
        r("a", "2", True),
        r("b", "2", False, "review"),
        r("c", "2", False),
        r("d", "2", None, "not_analysed"),
    ]
    truth = {"a": True, "b": True, "c": False, "d": True}
    report = compare(
        pathway="stroke_triage",
        model_name="pacsflow-ich",
        champion=champion,
        challenger=challenger,
        truth=truth,
    )
    assert (report.champion_version, report.challenger_version) == ("1", "2")
    assert [s.study_uid for s in report.studies] == ["a", "b", "c", "d"]
    assert report.unpaired == 1
    m = report.metrics()
    assert m["studies_paired"] == 4 and m["studies_with_truth"] == 4
    assert m["agreement_finding"] == pytest.approx(2 / 3)  # d has no call
    assert m["agreement_priority"] == 0.5  # b and d differ
    assert m["champion_sensitivity"] == 1.0 and m["challenger_sensitivity"] == 0.5
    assert m["champion_specificity"] == 1.0 == m["challenger_specificity"]
    assert m["disagreements"] == 2
    rows = list(csv.DictReader(write_csv(report, tmp_path / "a.csv").open()))
    assert [row["study_uid"] for row in rows] == ["b", "d", "a", "c"]  # disagreements first
    assert rows[0]["agree_finding"] == "no" and rows[1]["agree_finding"] == ""
    text = summary_markdown(report)
    assert "50.0 %" in text and "v2 (challenger)" in text


def test_compare_refuses_mixed_versions() -> None:
    with pytest.raises(InvalidInputError):
        compare(
            pathway="p",
            model_name="m",
            champion=[r("a", "1", True), r("b", "3", True)],
            challenger=[r("a", "2", True)],
        )


def test_metrics_leave_undefined_rates_out() -> None:
    report = compare(
        pathway="p", model_name="m", champion=[r("a", "1", False)], challenger=[r("a", "2", False)]
    )
    m = report.metrics()
    assert "champion_sensitivity" not in m and "kappa_finding" not in m
    assert m["agreement_finding"] == 1.0


def test_truth_from_synthetic_studies(tmp_path: Path) -> None:
    from pacsflow.synth.phantoms import Hemorrhage
    from pacsflow.synth.studies import write_head_ct_study

    bleed = write_head_ct_study(
        tmp_path / "bleed",
        seed=1,
        hemorrhages=(Hemorrhage(subtype="intraparenchymal", volume_ml=10.0),),
        matrix=64,
        with_scout=False,
        with_bone=False,
        with_dose_report=False,
        coverage_mm=30.0,
    )
    normal = write_head_ct_study(
        tmp_path / "normal",
        seed=2,
        matrix=64,
        with_scout=False,
        with_bone=False,
        with_dose_report=False,
        coverage_mm=30.0,
    )
    assert truth_from_synthetic(tmp_path) == {bleed.study_uid: True, normal.study_uid: False}
