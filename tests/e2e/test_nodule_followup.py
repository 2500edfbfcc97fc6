"""Lung-nodule follow-up from DICOM arrival to writeback, on the whole real stack.

Priors lie in the archive (Orthanc) only, as old studies do; the order with its indication
arrives over MLLP before the images; the current chest CT goes to archive and gateway.
Expected categories come from the ground truth of the generator through the rules module
(whose own tests check it against the published tables), never from the pipeline.

The histories are fixed seeds on which the shipped nodule model detects the nodule in every
exam. It does not on all seeds: at this matrix it misses some 8-10 mm priors and its volume
ratios between exams err enough that the doubling time is within 10% of the truth in 2 of 8
growing histories measured (see NOTES.md); the model's own accuracy is measured by
`models.evaluate`, not here.
"""

from __future__ import annotations

import math
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from deployments.local_stack import LocalStack
from pacsflow.db.tables import PathwayRun
from pacsflow.dicom.dicomweb import Archive
from pacsflow.dicom.sr import SrSummary, read_sr_summary
from pacsflow.hl7.client import send_message_sync
from pacsflow.orchestration.prefect_api import PrefectApi
from pacsflow.pathways.followup import WORKUP_DUE_DAYS
from pacsflow.pathways.lungrads import NoduleState, lungrads, next_exam_due
from pacsflow.synth.phantoms import Nodule
from pacsflow.synth.studies import write_patient_history
from pacsflow.synth.truth import StudyTruth

pytestmark = [pytest.mark.slow, pytest.mark.orthanc, pytest.mark.prefect, pytest.mark.mlflow]

MATRIX = 256  # the clinical protocol (1.25 mm slices) on a smaller image
SCREENING = "Lung cancer screening, annual LDCT, 30 pack-years"


def _order(stack: LocalStack, truth: StudyTruth, indication: str, control: str) -> None:
    accession = truth.accession_number
    message = "\r".join(
        [
            f"MSH|^~\\&|RIS|HOSP|PACSFLOW|RAD|20261128093000||ORM^O01|{control}|P|2.5.1",
            f"PID|1||{truth.patient_id}^^^HOSP^MR||Test^Patient||19580101|M",
            f"ORC|NW|PL-{accession}|FL-{accession}||SC||^^^^^R||20261128093000",
            _obr(accession, indication),
        ]
    )
    gateway = stack.settings.gateway
    ack = send_message_sync(gateway.host, gateway.mllp_port, message, timeout_s=10)
    assert ack.accepted, ack.text


def _obr(accession: str, indication: str) -> str:
    fields = [""] * 32
    fields[1], fields[2], fields[3] = "1", f"PL-{accession}", f"FL-{accession}"
    fields[4] = "CTCHEST^CT chest low dose^L"
    fields[7] = "20261128093000"
    fields[18] = accession  # OBR-18: the accession number
    fields[31] = f"^{indication}"  # OBR-31: reason for study
    return "OBR|" + "|".join(fields[1:])


def _history(
    stack: LocalStack, folder: Path, *, seed: int, priors: int, nodule_mm: float, vdt: float | None
) -> list[StudyTruth]:
    truths = write_patient_history(
        folder,
        seed=seed,
        nodules=(Nodule("solid", nodule_mm),),
        n_priors=priors,
        doubling_time_days=vdt,
        matrix=MATRIX,
        slice_mm=1.25,
    )
    for truth in truths[:-1]:
        stack.send(_folder(folder, truth), to_gateway=False)
    return truths


def _run(stack: LocalStack, truth: StudyTruth, folder: Path) -> PathwayRun:
    stack.send(_folder(folder, truth))
    found = stack.wait_outcomes([truth.study_uid], timeout_s=600)
    assert truth.study_uid in found, "no pathway outcome"
    run = found[truth.study_uid]
    assert run.outcome not in ("failed", "not_analysed"), (run.outcome, run.reasons)
    return run


def _sr(stack: LocalStack, study_uid: str) -> SrSummary:
    archive = Archive(stack.settings.orthanc)
    for series in archive.search_series(study_uid):
        if series["00080060"]["Value"][0] == "SR":
            (sr,) = archive.retrieve_series(study_uid, series["0020000E"]["Value"][0])
            return read_sr_summary(sr)
    raise AssertionError("no SR in the archive")


def _state(truths: list[StudyTruth]) -> NoduleState:
    """What the rules should see for the generated nodule, from the ground truth."""
    now = truths[-1].lesions[0]
    prior = truths[-2].lesions[0] if len(truths) > 1 else None
    days = (_day(truths[-1]) - _day(truths[-2])).days if prior else None
    return NoduleState(
        tracking_id="N1",
        nodule_type="solid",
        mean_diameter_mm=now.mean_diameter_mm,
        solid_component_mm=None,
        volume_mm3=now.volume_ml * 1000.0,
        is_new=False,
        prior_mean_diameter_mm=prior.mean_diameter_mm if prior else None,
        interval_days=days,
    )


def _day(truth: StudyTruth) -> date:
    return date.fromisoformat(truth.study_date)


def _folder(root: Path, truth: StudyTruth) -> Path:
    return root / f"study_{_day(truth):%Y%m%d}"


def _tasks(stack: LocalStack, study_uid: str) -> list[dict[str, object]]:
    return [t for t in stack.ehr.store.search("Task", []) if study_uid in str(t.get("focus", {}))]


def test_growing_nodule_with_two_priors(stack: LocalStack, tmp_path: Path) -> None:
    folder = tmp_path / "growing"
    truths = _history(stack, folder, seed=5, priors=2, nodule_mm=12.0, vdt=400.0)
    current = truths[-1]
    _order(stack, current, SCREENING, "NOD-1")
    run = _run(stack, current, folder)

    expected = lungrads([_state(truths)], baseline=False)
    assert run.features["guideline"] == "lung-rads"
    assert run.features["category"] == expected.category, run.reasons
    sr = _sr(stack, current.study_uid)
    assert sorted(sr.prior_study_uids) == sorted(t.study_uid for t in truths[:-1])
    truth_now, truth_first = current.lesions[0], truths[0].lesions[0]
    located = [f for f in sr.findings if f.centroid_mm is not None]
    nodule = min(located, key=lambda f: math.dist(f.centroid_mm, truth_now.centroid_lps_mm))
    # Growth and doubling time within 10% of the ground truth.
    assert math.dist(nodule.centroid_mm, truth_now.centroid_lps_mm) < 5.0, sr.findings
    vdt_note = next((n for n in nodule.notes if n.startswith("Volume doubling time")), None)
    assert vdt_note, nodule.notes
    vdt = float(vdt_note.split(":")[1].split()[0])
    assert vdt == pytest.approx(400.0, rel=0.10)
    # Growth: mean diameter change since the first exam (the longest baseline).
    change_note = next(n for n in nodule.notes if n.startswith("Mean diameter change since"))
    change = float(change_note.rsplit(":", 1)[1].split()[0])
    truth_change = truth_now.mean_diameter_mm - truth_first.mean_diameter_mm
    assert change == pytest.approx(truth_change, rel=0.10)

    (task,) = _tasks(stack, current.study_uid)
    if expected.follow_up_months:
        due = next_exam_due(_day(current), expected.follow_up_months)
    else:  # 4B/4X: a work-up, arranged within the site's 30 days
        due = _day(current) + timedelta(days=WORKUP_DUE_DAYS)
    assert task["restriction"]["period"]["end"] == due.isoformat()
    assert task["priority"] == ("urgent" if expected.category in ("4B", "4X") else "routine")


def test_no_priors_gives_the_baseline_category_and_a_task(
    stack: LocalStack, tmp_path: Path
) -> None:
    folder = tmp_path / "baseline"
    truths = _history(stack, folder, seed=22, priors=0, nodule_mm=9.0, vdt=None)
    current = truths[-1]
    _order(stack, current, SCREENING, "NOD-2")
    run = _run(stack, current, folder)
    expected = lungrads([_state(truths)], baseline=True)
    assert run.features["category"] == expected.category, run.reasons
    sr = _sr(stack, current.study_uid)
    assert sr.prior_study_uids == [] and sr.comparison == []
    (task,) = _tasks(stack, current.study_uid)
    due = next_exam_due(_day(current), expected.follow_up_months or 12)
    assert task["restriction"]["period"]["end"] == due.isoformat()


def test_stable_nodule_over_two_years_is_benign_behaviour(
    stack: LocalStack, tmp_path: Path
) -> None:
    folder = tmp_path / "stable"
    truths = _history(stack, folder, seed=26, priors=2, nodule_mm=9.0, vdt=None)
    current = truths[-1]
    _order(stack, current, SCREENING, "NOD-3")
    run = _run(stack, current, folder)
    assert run.features["category"] == "2", run.reasons


def test_rerun_writes_nothing_twice(stack: LocalStack, tmp_path: Path) -> None:
    folder = tmp_path / "rerun"
    truths = _history(stack, folder, seed=24, priors=1, nodule_mm=9.0, vdt=500.0)
    current = truths[-1]
    _order(stack, current, SCREENING, "NOD-4")
    first = _run(stack, current, folder)
    before = sorted(w.target for w in stack.writebacks(current.study_uid))
    orus = len(stack.ris.of_type("ORU^R01"))
    # An operator's rerun from the Prefect side, with a key of its own.
    api = PrefectApi(stack.settings.prefect.effective_api_url)
    api.create_flow_run(
        "nodule-followup/nodule-followup",
        {"study_uid": current.study_uid, "accession_number": current.accession_number},
        idempotency_key=f"manual-rerun-{current.study_uid}",
    )
    deadline = time.monotonic() + 300
    while stack.outcomes([current.study_uid])[current.study_uid].flow_run_id == first.flow_run_id:
        assert time.monotonic() < deadline, "the rerun never finished"
        time.sleep(0.5)
    assert sorted(w.target for w in stack.writebacks(current.study_uid)) == before
    assert len(stack.ris.of_type("ORU^R01")) == orus
    assert len(_tasks(stack, current.study_uid)) == 1
    assert len(stack.ehr.store.search("DiagnosticReport", [])) == len(
        {str(r.get("identifier")) for r in stack.ehr.store.search("DiagnosticReport", [])}
    )
