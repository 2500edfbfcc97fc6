"""Shadow mode on real parts: the shipped ICH model as champion and the same weights with a
different decision rule as challenger in a real MLflow store (SQLite), synthetic head CTs in
a real Orthanc, a recording RIS and the FHIR test double configured as the hospital
systems, the archive-sweep flow under Prefect's test harness.

The challenger must produce an agreement report in MLflow and write nothing anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from pacsflow.config import Settings, load_settings
from pacsflow.config.settings import write_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import PathwayRun, WorklistItem, Writeback
from pacsflow.dicom.dicomweb import Archive
from pacsflow.fhir.test_server import FhirTestServer, run_fhir_test_server
from pacsflow.hl7.test_peer import RecordingRisPeer
from pacsflow.synth.phantoms import Hemorrhage
from pacsflow.synth.studies import write_head_ct_study
from pacsflow.synth.truth import StudyTruth
from pacsflow.testing.services import isolated_settings

pytestmark = [pytest.mark.orthanc, pytest.mark.prefect, pytest.mark.mlflow, pytest.mark.slow]

DAY = date(2035, 2, 14)  # a StudyDate no other test uses
MATRIX = 256  # the smallest matrix the head CT suite accepts (pixel spacing <= 1.2 mm)
# The challenger: the shipped weights, but a hemorrhage must be >= 60 mL to be reported.
CHALLENGER_MIN_VOLUME_ML = 60.0


@dataclass
class World:
    settings: Settings
    truths: list[StudyTruth]
    truth_dir: Path
    ris: RecordingRisPeer
    ehr: FhirTestServer
    champion: str
    challenger: str


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


def _register(tracking_uri: str, work: Path) -> tuple[str, str]:
    """Champion: the shipped ICH weights (bootstrap). Challenger: the same weights with a
    different minimum hemorrhage volume in the config, registered as a new version."""
    from models.bootstrap import ensure_model
    from models.catalogue import MODELS
    from models.registry import Registry

    registry = Registry(tracking_uri)
    spec = MODELS["ich"]
    champion = ensure_model(registry, spec)
    config = json.loads(spec.config().read_text())
    config["extra"]["min_volume_ml"] = CHALLENGER_MIN_VOLUME_ML
    config_path = work / "ich-challenger.json"
    config_path.write_text(json.dumps(config))
    challenger = registry.register(
        spec.registered_name,
        weights=spec.weights(),
        config=config_path,
        model_card="# ICH challenger\nShipped weights, min_volume_ml 60 (test).\n",
        metrics={},
        params={"min_volume_ml": CHALLENGER_MIN_VOLUME_ML},
    )
    registry.shadow(spec.registered_name, challenger.version)
    return champion.version, challenger.version


@pytest.fixture(scope="module")
def world(
    orthanc: Settings, tmp_path_factory: pytest.TempPathFactory, prefect_harness: None
) -> Iterator[World]:
    import tasks._runtime

    work = tmp_path_factory.mktemp("shadow")
    cases = [(), (), (Hemorrhage(subtype="intraparenchymal", volume_ml=30.0, side="right"),)]
    cases.append((Hemorrhage(subtype="intraparenchymal", volume_ml=12.0, side="left"),))
    truths = []
    for index, hemorrhages in enumerate(cases):
        truths.append(
            write_head_ct_study(
                work / "studies" / f"s{index}",
                seed=7 if hemorrhages and hemorrhages[0].volume_ml == 30.0 else 40 + index,
                hemorrhages=hemorrhages,
                matrix=MATRIX,
                study_date=DAY,
                with_scout=False,
                with_bone=False,
                with_dose_report=False,
            )
        )
    files = sorted((work / "studies").rglob("*.dcm"))
    Archive(orthanc.orthanc).store([pydicom.dcmread(f) for f in files])
    with RecordingRisPeer.in_background() as ris, run_fhir_test_server() as ehr:
        built = isolated_settings(
            work / "var",
            orthanc={
                "http_port": orthanc.orthanc.http_port,
                "dicom_port": orthanc.orthanc.dicom_port,
            },
            ris={"mllp_port": ris.port},
            ehr={"fhir_base_url": ehr.url},
        )
        upgrade(built.database_url)
        champion, challenger = _register(built.mlflow_tracking_uri, work)
        path = write_settings(built, work / "pacsflow.toml")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PACSFLOW_CONFIG_FILE", str(path))
            tasks._runtime._build_env.cache_clear()  # the worker's env of this settings
            try:
                yield World(
                    load_settings(), truths, work / "studies", ris, ehr, champion, challenger
                )
            finally:
                tasks._runtime._build_env.cache_clear()


def test_challenger_report_in_mlflow_and_nothing_written(world: World) -> None:
    import mlflow
    from mlflow import MlflowClient

    from flows.archive_sweep import archive_sweep

    result = archive_sweep(
        pathway="stroke_triage",
        start=DAY,
        end=DAY,
        sweep="shadow-test",
        dispatch=False,
        truth_dir=str(world.truth_dir),
    )
    n = len(world.truths)
    assert result["studies"] == n and result["dispatched"] == 0
    assert result["shadow_reads"] == 2 * n
    assert result["challenger_version"] == world.challenger

    # The report run in MLflow, tagged with both versions, with the metrics and the CSV.
    uri = world.settings.mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("pacsflow-shadow")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [result["shadow_mlflow_run"]]
    run = runs[0]
    assert run.data.tags["pacsflow.champion_version"] == world.champion
    assert run.data.tags["pacsflow.challenger_version"] == world.challenger
    metrics = run.data.metrics
    assert metrics["studies_paired"] == n and metrics["studies_with_truth"] == n
    for key in (
        "agreement_finding",
        "agreement_priority",
        "champion_sensitivity",
        "champion_specificity",
        "challenger_sensitivity",
        "challenger_specificity",
    ):
        assert key in metrics, key
    # The challenger reports no hemorrhage under 60 mL: it misses what the champion finds.
    assert metrics["challenger_sensitivity"] == 0.0
    assert metrics["champion_sensitivity"] > 0.0
    assert metrics["disagreements"] >= 1
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "agreement")]
    assert "agreement/agreement.csv" in artifacts
    local = Path(client.download_artifacts(run.info.run_id, "agreement/agreement.csv"))
    assert len(local.read_text().splitlines()) == n + 1

    # Both versions' readings stored as shadow results, nothing as a live pathway result.
    sessions = make_sessionmaker(make_engine(world.settings.database_url))
    with sessions() as session:
        rows = session.scalars(select(PathwayRun)).all()
        assert {(r.pathway, r.model_version) for r in rows} == {
            ("stroke_triage:shadow", world.champion),
            ("stroke_triage:shadow", world.challenger),
        }
        assert len(rows) == 2 * n
        assert session.scalar(select(func.count()).select_from(Writeback)) == 0
        assert session.scalar(select(func.count()).select_from(WorklistItem)) == 0

    # Nothing in the archive (no SR, no SEG), the RIS or the EHR.
    archive = Archive(world.settings.orthanc)
    for truth in world.truths:
        modalities = {s["00080060"]["Value"][0] for s in archive.search_series(truth.study_uid)}
        assert modalities == {"CT"}, truth.study_uid
    assert world.ris.received == []
    assert all(not found for found in world.ehr.store.resources.values())


def test_a_second_sweep_reads_nothing_again(world: World) -> None:
    from flows.archive_sweep import archive_sweep

    result = archive_sweep(
        pathway="stroke_triage",
        start=DAY,
        end=DAY,
        sweep="shadow-test-again",
        dispatch=False,
        truth_dir=str(world.truth_dir),
    )
    assert result["shadow_reads"] == 0 and result["skipped"] == len(world.truths)
    assert result["shadow_metrics"]["studies_paired"] == len(world.truths)


def test_live_triage_reads_with_the_challenger_after_its_own_writebacks(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """triage.shadow_live: the live run writes back once, as the champion; the challenger's
    reading (and a paired champion reading) are stored as shadow rows only."""
    import tasks._runtime
    from flows.stroke_triage import stroke_triage

    truth = write_head_ct_study(
        tmp_path / "live",
        seed=7,
        hemorrhages=(Hemorrhage(subtype="intraparenchymal", volume_ml=30.0, side="right"),),
        matrix=MATRIX,
        study_date=date(2036, 3, 1),  # outside the sweeps above
        with_scout=False,
        with_bone=False,
        with_dose_report=False,
    )
    archive = Archive(world.settings.orthanc)
    archive.store([pydicom.dcmread(f) for f in sorted((tmp_path / "live").rglob("*.dcm"))])
    monkeypatch.setattr(tasks._runtime.env().settings.triage, "shadow_live", True)

    result = stroke_triage(study_uid=truth.study_uid, accession_number=truth.accession_number)

    assert result["priority"] == "critical"
    sessions = make_sessionmaker(make_engine(world.settings.database_url))
    with sessions() as session:
        rows = session.scalars(
            select(PathwayRun).where(PathwayRun.study_uid == truth.study_uid)
        ).all()
        outcomes = {(r.pathway, r.model_version): r.outcome for r in rows}
        assert len(rows) == 3
        assert outcomes[("stroke_triage", world.champion)] == "critical"
        assert outcomes[("stroke_triage:shadow", world.champion)] == "critical"
        # The challenger reports nothing under 60 mL: it disagrees, and says so only here.
        assert outcomes[("stroke_triage:shadow", world.challenger)] != "critical"
        written = session.scalars(
            select(Writeback.target).where(Writeback.study_uid == truth.study_uid)
        ).all()
    assert sorted(written).count("ris") == 1  # one ORU: the challenger sent nothing
    orus = [r for r in world.ris.received if r.message.message_type.startswith("ORU")]
    assert len(orus) == 1
    srs = [s for s in archive.search_series(truth.study_uid) if s["00080060"]["Value"][0] == "SR"]
    assert len(srs) == 1
