"""Prior prefetch: which orders call for one, and when a run may use what was prefetched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.config import Settings, load_settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.db.tables import PrefetchedContext
from pacsflow.domain import OrderContext
from pacsflow.gateway.prefetch import plan_prefetch, procedure_modality
from pacsflow.gateway.routing import load_rules, parse_rules
from pacsflow.hl7.records import OrderEvent
from pacsflow.pathways.sources import StudySource
from pacsflow.stack.process import free_port

RULES = load_rules()  # the shipped defaults


def _event(
    code: str | None = "CTHEAD",
    text: str | None = "CT head without contrast",
    status: str | None = "SC",
    control: str | None = "NW",
) -> OrderEvent:
    order = OrderContext(
        accession_number="ACC1",
        patient_id="PAT1",
        procedure_code=code,
        procedure_text=text,
        order_status=status,
    )
    return OrderEvent(order_control=control, order=order)


@pytest.mark.parametrize(
    ("code", "text", "modality"),
    [
        ("CTHEAD", "CT head", "CT"),
        ("70450", "CT HEAD/BRAIN W/O CONTRAST", "CT"),  # CPT code: the text says it
        ("CTHEAD", None, "CT"),  # the code's prefix
        ("RAD123", "MRI brain", "MR"),
        ("NM001", "PET-CT whole body", "PT"),
        ("X1", "Hand, two views", None),
        (None, None, None),
    ],
)
def test_procedure_modality(code: str | None, text: str | None, modality: str | None) -> None:
    assert procedure_modality(code, text) == modality


def test_head_ct_order_prefetches_ct_priors_for_stroke_triage() -> None:
    plan = plan_prefetch(_event(), RULES)
    assert plan is not None
    assert (plan.pathway, plan.modality) == ("stroke_triage", "CT")
    assert (plan.accession_number, plan.patient_id) == ("ACC1", "PAT1")


def test_chest_ct_order_prefetches_for_nodule_followup() -> None:
    plan = plan_prefetch(_event("CTCHEST", "CT Thorax low dose"), RULES)
    assert plan is not None and plan.pathway == "nodule_followup"


@pytest.mark.parametrize(
    "event",
    [
        _event("MRBRAIN", "MR brain"),  # no pathway for MR
        _event("XRHAND", "XR hand"),
        _event("CTABD", "CT abdomen"),  # CT, but no pathway for the abdomen
        _event(status="CM"),  # exam complete: the images are there, the run will query
        _event(status="CA"),
        _event(control="CA"),  # a cancel request
    ],
)
def test_orders_without_prior_prefetch(event: OrderEvent) -> None:
    assert plan_prefetch(event, RULES) is None


def test_a_sites_procedure_code_rule_routes_orders_by_code() -> None:
    rules = parse_rules(
        '[[rule]]\nname = "stroke-code"\npathway = "stroke_triage"\nprocedure_code = ["R-1234"]\n'
    )
    plan = plan_prefetch(_event("R-1234", "Stroke protocol"), rules)
    assert plan is not None and plan.pathway == "stroke_triage"


# -- the run's side: prefetched when fresh, else queried ----------------------------------------
@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The archive's port has nothing listening: these tests must not need it.
    return load_settings(
        paths={"var_dir": tmp_path / "var"},
        orthanc={"http_port": free_port()},
        priors={"max_age_s": 600},
    )


@pytest.fixture
def sessions(settings: Settings) -> sessionmaker[Session]:
    upgrade(settings.database_url)
    return make_sessionmaker(make_engine(settings.database_url))


def _store(
    sessions: sessionmaker[Session], age_s: float, patient_id: str = "PAT1", modality: str = "CT"
) -> None:
    with sessions() as session:
        session.merge(
            PrefetchedContext(
                accession_number="ACC1",
                patient_id=patient_id,
                pathway="stroke_triage",
                modality=modality,
                priors=[
                    {"study_uid": "1.2.3", "study_date": "20250101", "description": "CT HEAD"},
                    {"study_uid": "1.2.4", "study_date": "20260301", "modalities": ["CT"]},
                    {"study_uid": "1.2.5", "study_date": ""},  # undated: never "earlier"
                ],
                fetched_at=datetime.now(UTC) - timedelta(seconds=age_s),
            )
        )
        session.commit()


def test_fresh_prefetched_priors_are_used_and_marked(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    _store(sessions, age_s=60)
    source = StudySource(settings, sessions)
    priors = source.prior_studies("PAT1", "20260301", accession_number="ACC1")
    assert priors.source == "prefetched"
    assert priors.fetched_at is not None
    # Only studies before the current one's date, as a query would give.
    assert [s.study_uid for s in priors.studies] == ["1.2.3"]
    assert source.priors("PAT1", "20260301", accession_number="ACC1") == [
        {
            "study_uid": "1.2.3",
            "study_date": "20250101",
            "description": "CT HEAD",
            "modalities": "",
            "source": "prefetched",
        }
    ]


@pytest.mark.parametrize(
    ("age_s", "patient_id", "modality", "accession"),
    [
        (601, "PAT1", "CT", "ACC1"),  # too old
        (60, "PAT-OTHER", "CT", "ACC1"),  # fetched for another patient (e.g. before a merge)
        (60, "PAT1", "MR", "ACC1"),  # another modality
        (60, "PAT1", "CT", None),  # the run does not know the accession
        (60, "PAT1", "CT", "ACC2"),  # nothing prefetched for this order
    ],
)
def test_prefetched_priors_not_for_this_run_are_not_used(
    settings: Settings,
    sessions: sessionmaker[Session],
    age_s: float,
    patient_id: str,
    modality: str,
    accession: str | None,
) -> None:
    """The run then queries the archive (tests/integration/test_prior_prefetch.py)."""
    _store(sessions, age_s, patient_id, modality)
    assert StudySource(settings, sessions).prefetched(accession, "PAT1", "CT") is None


def test_no_patient_or_date_means_no_priors(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    priors = StudySource(settings, sessions).prior_studies("", "20260301", accession_number="A")
    assert (priors.source, priors.studies) == ("none", [])
