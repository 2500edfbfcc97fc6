"""The screening cohort flow under Prefect's test harness, against a real Orthanc (the chest
CTs of a synthetic population) and the FHIR R4 test double (their smoking histories)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from pacsflow.config import Settings, load_settings
from pacsflow.config.settings import write_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import PathwayRun
from pacsflow.dicom.dicomweb import Archive
from pacsflow.fhir.test_server import FhirTestServer, run_fhir_test_server
from pacsflow.pathways.cohort import SweepWindow, load_ledger
from pacsflow.pathways.ehr_screening import OUTREACH_SYSTEM
from pacsflow.pathways.screening_rules import ScreeningProgram, next_due, overdue
from pacsflow.pathways.sweep import SweepProgress, load_checkpoint
from pacsflow.synth.population import ScreeningPopulation, load_population, screening_population
from pacsflow.synth.truth import StudyTruth
from pacsflow.testing.services import isolated_settings

pytestmark = [pytest.mark.orthanc, pytest.mark.prefect, pytest.mark.slow]

# Study dates (as_of - 1 .. 730 days) that no other test stores, so the sweeps see only ours.
AS_OF = date(2033, 5, 2)
INTERVAL_CATEGORY = {12: "2", 6: "3", 3: "4A"}  # Lung-RADS v2022 category of each interval


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


@pytest.fixture(scope="module")
def fhir() -> Iterator[FhirTestServer]:
    server = run_fhir_test_server("127.0.0.1", 0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def population() -> ScreeningPopulation:
    return screening_population(36, seed=23, as_of=AS_OF)


@pytest.fixture(scope="module")
def stored(
    orthanc: Settings,
    population: ScreeningPopulation,
    fhir: FhirTestServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[StudyTruth]:
    """The population's chest CTs in the archive, its records in the EHR."""
    folder = tmp_path_factory.mktemp("population")
    truths = population.write_studies(folder)
    Archive(orthanc.orthanc).store([pydicom.dcmread(f) for f in sorted(folder.rglob("*.dcm"))])
    load_population(population, fhir.url)
    return truths


@pytest.fixture(scope="module")
def settings(
    orthanc: Settings,
    fhir: FhirTestServer,
    stored: list[StudyTruth],
    population: ScreeningPopulation,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Settings]:
    from pacsflow.synth.population import MRN_SYSTEM

    var = tmp_path_factory.mktemp("screening-var")
    built = isolated_settings(
        var,
        orthanc={"http_port": orthanc.orthanc.http_port, "dicom_port": orthanc.orthanc.dicom_port},
        ehr={"fhir_base_url": fhir.url, "patient_id_system": MRN_SYSTEM},
        sweeps={"page_size": 7, "window_days": 45},
        screening={"ehr_concurrency": 3, "overdue_weeks_threshold": 1},
    )
    upgrade(built.database_url)
    _record_nodule_results(built, population, stored)
    path = write_settings(built, var / "pacsflow.toml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PACSFLOW_CONFIG_FILE", str(path))
        yield load_settings()


def _record_nodule_results(
    settings: Settings, population: ScreeningPopulation, truths: list[StudyTruth]
) -> None:
    """What the nodule pathway said about the enrolled patients' last CTs: the Lung-RADS
    category of their interval (the rest have no result: 12 months by default)."""
    sessions = make_sessionmaker(make_engine(settings.database_url))
    with sessions() as session:
        for patient, truth in zip(population.patients, truths, strict=True):
            months = patient.facts.lungrads_interval_months
            if months is None:
                continue
            session.add(
                PathwayRun(
                    study_uid=truth.study_uid,
                    pathway="nodule_followup",
                    model_version="1",
                    outcome="routine",
                    features={"category": INTERVAL_CATEGORY[months], "nodules": 1},
                )
            )
        session.commit()


def _flagged_mrns(fhir: FhirTestServer, ids: dict[str, str]) -> dict[ScreeningProgram, set[str]]:
    by_id = {patient_id: mrn for mrn, patient_id in ids.items()}
    found: dict[ScreeningProgram, set[str]] = {p: set() for p in ScreeningProgram}
    flags = httpx.get(
        f"{fhir.url}/Flag", params={"identifier": f"{OUTREACH_SYSTEM}|", "_count": "500"}
    ).json()
    for entry in flags.get("entry", []):
        flag = entry["resource"]
        program = ScreeningProgram(flag["code"]["coding"][0]["code"])
        found[program].add(by_id[flag["subject"]["reference"].removeprefix("Patient/")])
    return found


def _report_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    with open(result["report_csv"], encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _ours(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r["patient_id"].startswith("SCR23-")]


def _expected_overdue(population: ScreeningPopulation, threshold: int) -> set[str]:
    late = set()
    for p in population.patients:
        weeks = overdue(p.facts, AS_OF)
        due = next_due(p.facts)
        if weeks is not None and due is not None and due < AS_OF and weeks >= threshold:
            late.add(p.mrn)
    return late


def test_flagged_set_is_the_rules_selection_and_a_second_run_flags_nothing(
    prefect_harness: None,
    settings: Settings,
    fhir: FhirTestServer,
    population: ScreeningPopulation,
) -> None:
    from flows.screening_cohort import screening_cohort

    ids = load_population(population, fhir.url)  # the same ids again (conditional creates)
    first = screening_cohort(sweep="nightly", as_of=AS_OF)

    flagged = _flagged_mrns(fhir, ids)
    expected_total = 0
    for program in ScreeningProgram:
        expected = population.expected_outreach(program)
        assert expected, f"the population should have someone to flag for {program}"
        assert flagged[program] == expected, program
        expected_total += len(expected)
    assert first["flagged_now"] == expected_total
    assert first["sweep"]["studies"] == len(population.patients)
    assert first["counts"]["patients"] == len(population.patients)

    rows = _ours(_report_rows(first))
    assert len(rows) == len(population.patients)
    listed = {r["patient_id"] for r in rows if r["overdue_listed"] == "yes"}
    expected_late = _expected_overdue(population, settings.screening.overdue_weeks_threshold)
    assert expected_late, "the population should have an overdue enrolled patient"
    assert listed == expected_late
    assert Path(first["report_html"]).read_text().count("<img") == 2

    # The nightly run of the next day: nothing new in the archive, nothing new flagged.
    second = screening_cohort(sweep="nightly", as_of=AS_OF)
    assert second["sweep"]["studies"] == 0 and second["sweep"]["resumed"]
    assert second["flagged_now"] == 0
    assert second["counts"]["patients"] == len(population.patients)
    assert _flagged_mrns(fhir, ids) == flagged
    tasks = httpx.get(
        f"{fhir.url}/Task", params={"identifier": f"{OUTREACH_SYSTEM}|", "_count": "500"}
    ).json()
    assert len(tasks.get("entry", [])) == expected_total
    outreach = {
        r["patient_id"]
        for r in _ours(_report_rows(second))
        if "already flagged" in (r["lung_outreach"], r["aaa_outreach"])
    }
    assert outreach == set().union(*(population.expected_outreach(p) for p in ScreeningProgram))


class Killed(Exception):
    """The worker died in the middle of the sweep."""


def test_a_sweep_killed_half_way_resumes_without_reprocessing(
    prefect_harness: None, settings: Settings, population: ScreeningPopulation
) -> None:
    from flows.screening_cohort import screening_cohort
    from tasks.screening import sweep_chest_cts

    days = [p.study_date for p in population.patients]
    window = SweepWindow(name="killed", start=min(days), end=max(days))
    half = len(population.patients) // 2

    def die_half_way(progress: SweepProgress) -> None:
        if progress.yielded >= half:
            raise Killed

    with pytest.raises(Killed):
        sweep_chest_cts(settings, window, on_progress=die_half_way)
    ledger = load_ledger(settings.sweep_checkpoint_dir, "killed")
    assert ledger is not None and len(ledger.patients) == half
    checkpoint = load_checkpoint(settings.sweep_checkpoint_dir, "killed")
    assert checkpoint is not None and checkpoint.yielded == half

    result = screening_cohort(
        sweep="killed", start=window.start, end=window.end, as_of=AS_OF, dry_run=True
    )
    assert result["sweep"]["resumed"]
    assert result["sweep"]["studies"] == len(population.patients) - half  # only the rest
    assert result["counts"]["patients"] == len(population.patients)
    rows = _ours(_report_rows(result))
    to_flag = {
        r["patient_id"]
        for r in rows
        if "would flag (dry run)" in (r["lung_outreach"], r["aaa_outreach"])
    }
    already = {
        r["patient_id"]
        for r in rows
        if "already flagged" in (r["lung_outreach"], r["aaa_outreach"])
    }
    expected = set().union(*(population.expected_outreach(p) for p in ScreeningProgram))
    assert to_flag | already == expected  # a dry run reads, judges, and writes nothing


def test_last_days_sweeps_only_those_days(
    prefect_harness: None, settings: Settings, population: ScreeningPopulation
) -> None:
    from flows.screening_cohort import screening_cohort

    result = screening_cohort(sweep="recent", last_days=90, as_of=AS_OF, dry_run=True)
    first_day = AS_OF - timedelta(days=90)
    recent = {p.mrn for p in population.patients if p.study_date >= first_day}
    assert result["sweep"]["window"]["name"] == f"recent-{first_day:%Y%m%d}"
    assert {r["patient_id"] for r in _ours(_report_rows(result))} == recent
