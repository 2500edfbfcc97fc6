"""Stroke triage from DICOM arrival to writeback, on the whole real stack.

Orthanc (archive), Prefect server, MLflow registry, the gateway and the warm runner run as
separate processes exactly as `pacsflow stack up` starts them; a recording MLLP RIS, the
FHIR R4 test double and a paging receiver stand in for the hospital systems.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from deployments.local_stack import LocalStack
from pacsflow.config import Settings
from pacsflow.db.tables import PathwayRun, WorklistItem, Writeback
from pacsflow.dicom.dicomweb import Archive, OrthancExtras
from pacsflow.dicom.sr import read_sr_summary
from pacsflow.orchestration.prefect_api import PrefectApi
from pacsflow.synth.phantoms import Hemorrhage
from pacsflow.synth.studies import write_head_ct_study

pytestmark = [pytest.mark.slow, pytest.mark.orthanc, pytest.mark.prefect, pytest.mark.mlflow]

COMPRESSED = 256  # matrix of the e2e studies: the clinical protocol on a smaller image


@pytest.fixture(scope="module")
def e2e(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> E2E:
    return E2E(stack, tmp_path_factory.mktemp("studies"))


@dataclass
class E2E:
    local: LocalStack
    studies: Path

    @property
    def settings(self) -> Settings:
        return self.local.settings

    def send(self, folder: Path) -> None:
        self.local.send(folder)

    def outcome(self, study_uid: str, timeout_s: float = 180.0) -> PathwayRun:
        found = self.local.wait_outcomes([study_uid], timeout_s)
        assert study_uid in found, f"no pathway outcome for {study_uid} in {timeout_s} s"
        return found[study_uid]

    def writebacks(self, study_uid: str) -> list[Writeback]:
        return self.local.writebacks(study_uid)

    def sessions(self) -> Any:
        return self.local.sessions


def test_hemorrhage_is_critical_with_sr_seg_oru_fhir_and_alert(e2e: E2E) -> None:
    folder = e2e.studies / "ich"
    truth = write_head_ct_study(
        folder,
        seed=7,
        hemorrhages=(Hemorrhage(subtype="intraparenchymal", volume_ml=30.0, side="right"),),
        matrix=COMPRESSED,
    )
    e2e.send(folder)
    run = e2e.outcome(truth.study_uid)
    assert run.outcome == "critical", run.reasons
    targets = sorted(w.target for w in e2e.writebacks(truth.study_uid))
    assert targets == ["archive", "ehr", "notify", "ris", "ris-priority"]

    archive = Archive(e2e.settings.orthanc)
    series = archive.search_series(truth.study_uid)
    modalities = sorted(s["00080060"]["Value"][0] for s in series)
    assert "SEG" in modalities and "SR" in modalities
    sr_series = next(s for s in series if s["00080060"]["Value"][0] == "SR")
    sr = archive.retrieve_series(truth.study_uid, sr_series["0020000E"]["Value"][0])[0]
    summary = read_sr_summary(sr)
    true_ml = truth.lesions[0].volume_ml
    assert summary.findings, "SR has no finding"
    measured = summary.findings[0].volume_ml
    assert measured is not None and abs(measured - true_ml) / true_ml < 0.35

    orus = e2e.local.ris.of_type("ORU^R01")
    assert len([m for m in orus if truth.accession_number in m.to_er7()]) == 1
    assert "AA" in "".join(seg.to_er7() for seg in orus[-1].all("OBX"))
    reports = [
        r
        for r in e2e.local.ehr.store.search("DiagnosticReport", [])
        if truth.study_uid in str(r.get("imagingStudy", "")) + str(r.get("identifier", ""))
        or truth.accession_number in str(r)
    ]
    assert len(reports) == 1
    assert len(e2e.local.ehr.store.search("Flag", [])) >= 1
    assert any(body["study_uid"] == truth.study_uid for body in e2e.local.pager.received)
    assert (
        OrthancExtras(e2e.settings.orthanc).get_study_metadata(truth.study_uid, "PacsflowPriority")
        == "critical"
    )
    with e2e.sessions()() as session:
        assert session.get(WorklistItem, truth.study_uid).priority == "critical"
    timings = run.timings
    assert timings["received"] and timings["archive_done"] and timings["ris_done"]


def test_normal_study_is_routine_with_a_no_finding_sr(e2e: E2E) -> None:
    folder = e2e.studies / "normal"
    truth = write_head_ct_study(folder, seed=8, matrix=COMPRESSED)
    e2e.send(folder)
    run = e2e.outcome(truth.study_uid)
    assert run.outcome == "routine", run.reasons
    targets = sorted(w.target for w in e2e.writebacks(truth.study_uid))
    assert targets == ["archive", "ehr", "ris"]
    archive = Archive(e2e.settings.orthanc)
    sr_series = [
        s for s in archive.search_series(truth.study_uid) if s["00080060"]["Value"][0] == "SR"
    ]
    assert len(sr_series) == 1
    sr = archive.retrieve_series(truth.study_uid, sr_series[0]["0020000E"]["Value"][0])[0]
    summary = read_sr_summary(sr)
    assert summary.findings == [] and summary.finding_present is False


def test_contrast_ct_is_not_analysed_with_the_reason(e2e: E2E) -> None:
    folder = e2e.studies / "contrast"
    truth = write_head_ct_study(folder, seed=9, contrast=True, matrix=COMPRESSED)
    e2e.send(folder)
    run = e2e.outcome(truth.study_uid)
    assert run.outcome == "not_analysed"
    assert any("contrast" in r for r in run.reasons)


def test_rerunning_a_study_writes_nothing_twice(e2e: E2E) -> None:
    folder = e2e.studies / "rerun"
    truth = write_head_ct_study(
        folder,
        seed=10,
        hemorrhages=(Hemorrhage(subtype="subdural", volume_ml=20.0, side="left"),),
        matrix=COMPRESSED,
    )
    e2e.send(folder)
    first = e2e.outcome(truth.study_uid)
    before = len(e2e.writebacks(truth.study_uid))
    oru_before = len(e2e.local.ris.of_type("ORU^R01"))
    # Run the pathway again from the Prefect side (an operator's retry) with a new key.
    api = PrefectApi(e2e.settings.prefect.effective_api_url)
    api.create_flow_run(
        "stroke-triage/stroke-triage",
        {"study_uid": truth.study_uid, "accession_number": truth.accession_number},
        idempotency_key=f"manual-rerun-{truth.study_uid}",
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with e2e.sessions()() as session:
            row = session.scalar(select(PathwayRun).where(PathwayRun.study_uid == truth.study_uid))
            if row.flow_run_id != first.flow_run_id:
                break
        time.sleep(0.5)
    else:
        raise AssertionError("the rerun never finished")
    e2e.send(folder)  # and the study re-sent by the modality
    time.sleep(e2e.settings.gateway.stable_window_s["default"] + 3)
    assert len(e2e.writebacks(truth.study_uid)) == before
    assert len(e2e.local.ris.of_type("ORU^R01")) == oru_before
    archive = Archive(e2e.settings.orthanc)
    srs = [s for s in archive.search_series(truth.study_uid) if s["00080060"]["Value"][0] == "SR"]
    assert len(srs) == 1
    instances = archive.client.search_for_instances(
        study_instance_uid=truth.study_uid, series_instance_uid=srs[0]["0020000E"]["Value"][0]
    )
    assert len(instances) == 1


def test_ris_down_during_the_run_gets_the_oru_once_it_is_back(e2e: E2E) -> None:
    folder = e2e.studies / "ris-down"
    truth = write_head_ct_study(folder, seed=11, matrix=COMPRESSED)
    ris = e2e.local.ris
    ris.answer_always("close")  # the RIS drops every connection without an ACK
    try:
        e2e.send(folder)
        deadline = time.monotonic() + 120
        while not any(
            truth.accession_number in r.message.to_er7() and r.answer == "close"
            for r in ris.received
        ):
            assert time.monotonic() < deadline, "the ORU was never attempted"
            time.sleep(0.5)
        time.sleep(3)  # a retry or two fail as well
    finally:
        ris.answer_always("AA")
    run = e2e.outcome(truth.study_uid, timeout_s=240)
    assert run.outcome != "failed", run.reasons  # the model's call is not what is tested here
    delivered = [
        r
        for r in ris.received
        if r.answer == "AA"
        and r.message.message_type.startswith("ORU")
        and truth.accession_number in r.message.to_er7()
    ]
    assert len(delivered) == 1


def test_archive_down_during_the_run_is_retried_and_finishes(e2e: E2E) -> None:
    from pacsflow.stack.services import orthanc_service

    folder = e2e.studies / "archive-down"
    truth = write_head_ct_study(folder, seed=12, matrix=COMPRESSED)
    e2e.send(folder)  # in the archive and on the gateway's spool
    orthanc = orthanc_service(e2e.settings)
    orthanc.stop()  # the run starts when the study closes, with the archive away
    try:
        time.sleep(e2e.settings.gateway.stable_window_s["default"] + 6)
        assert not e2e.local.outcomes([truth.study_uid]), "finished without the archive?"
    finally:
        orthanc.start()
        orthanc.wait_ready()
    run = e2e.outcome(truth.study_uid, timeout_s=240)
    assert run.outcome != "failed", run.reasons
    assert {"archive", "ehr", "ris"} <= {w.target for w in e2e.writebacks(truth.study_uid)}
