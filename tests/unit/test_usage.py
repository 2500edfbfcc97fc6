"""Usage and cost: aggregation of pathway runs per model version, pathway and department;
the usage page and CSV export for admin and auditor (FastAPI TestClient over a real SQLite
database seeded with the sample site). The route x role matrix over a socket is in
tests/integration/test_web_matrix.py."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import Order, PathwayRun, WorklistItem
from pacsflow.governance.audit_export import AuditFilter, read_entries
from pacsflow.governance.usage import (
    USAGE_COLUMNS,
    CpuClock,
    RunRecord,
    inference_seconds,
    load_run_records,
    percentile,
    summarize_usage,
    time_to_flag_s,
)
from pacsflow.web.sample import SAMPLE_PASSWORD, SampleSite, build_sample_site

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def stamps(**offsets: float) -> dict[str, Any]:
    """Timings as a run records them: ISO stamps at T0 + seconds (keys ending _s are kept)."""
    return {
        k: v if k.endswith("_s") else (T0 + timedelta(seconds=v)).isoformat()
        for k, v in offsets.items()
    }


def run(
    department: str = "neuro", version: str = "3", outcome: str = "critical", **t: float
) -> RunRecord:
    return RunRecord(
        study_uid="1.2",
        pathway="stroke_triage",
        model_name="pacsflow-ich",
        model_version=version,
        department=department,
        outcome=outcome,
        timings=stamps(**t),
        inferred=outcome not in ("failed", "not_analysed"),
        finished_at=T0,
    )


def test_time_to_flag_and_inference_seconds() -> None:
    t = stamps(received=0, closed=5, started=6, inferred=9, decided=9.5, worklist_done=10,
               ris_done=12.5)  # fmt: skip
    assert time_to_flag_s(t) == 12.5
    assert inference_seconds(t) == 3.0  # started -> inferred when the call was not timed
    assert inference_seconds({**t, "inference_s": 1.25}) == 1.25
    assert time_to_flag_s(stamps(started=0, worklist_done=3)) is None  # no "received"
    assert time_to_flag_s({"received": "garbage", "ris_done": None}) is None


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)


def test_summary_per_model_version_pathway_and_department() -> None:
    runs = [
        run(
            received=0,
            started=1,
            inferred=3,
            decided=3,
            worklist_done=10,
            inference_s=1.5,
            inference_cpu_s=2.5,
        ),
        run(received=0, started=1, inferred=3, decided=3, worklist_done=20, inference_s=1.0),
        run(outcome="not_analysed", received=0, started=1, decided=2, worklist_done=4),
        run(outcome="failed", received=0, started=1),
        run(department="chest", received=0, started=1, inferred=2, decided=2, worklist_done=30),
        run(version="4", received=0, started=1, inferred=4, decided=4, worklist_done=8),
    ]
    rows = {(r.model_version, r.department): r for r in summarize_usage(runs)}
    assert list(rows) == [("3", "chest"), ("3", "neuro"), ("4", "neuro")]
    neuro = rows[("3", "neuro")]
    assert (neuro.runs, neuro.inferences, neuro.failed, neuro.not_analysed) == (4, 2, 1, 1)
    assert neuro.inference_s == 2.5
    assert (neuro.cpu_s, neuro.cpu_runs) == (2.5, 1)
    assert neuro.time_to_flag_n == 3
    assert neuro.time_to_flag_p50_s == 10.0
    assert neuro.time_to_flag_p95_s == pytest.approx(19.0)
    assert rows[("3", "chest")].cpu_s is None
    assert tuple(neuro.as_dict()) == USAGE_COLUMNS


def test_cpu_clock_measures_cpu_and_wall_time() -> None:
    with CpuClock() as clock:
        deadline = time.process_time() + 0.05
        while time.process_time() < deadline:  # burn CPU in this thread
            pass
    assert clock.process_s >= 0.05 and clock.thread_s >= 0.04
    assert clock.wall_s >= clock.thread_s * 0.5


# --- over the database and the web ----------------------------------------------------------
@pytest.fixture
def site(tmp_path: Path) -> SampleSite:
    site = build_sample_site(f"sqlite:///{tmp_path / 'web.db'}")
    seed_runs(site.sessions)
    return site


def seed_runs(sessions: sessionmaker[Session]) -> None:
    """Two more stroke runs (one from a study the RIS put in the "emergency" department),
    one run without a worklist row, and one run too old for a 30-day window."""
    now = datetime.now(UTC)
    with sessions() as s:
        s.add(
            WorklistItem(
                study_uid="9.1",
                accession_number="A9001",
                department="neuro",
                pathway="stroke_triage",
                priority="routine",
                model_name="pacsflow-ich",
                model_version="3",
            )
        )
        s.add(Order(accession_number="A9001", patient_id="P9", context={"department": "ED"}))
        received = now - timedelta(hours=1)
        for uid, days in (("9.1", 0), ("9.2", 0), ("9.3", 60)):
            s.add(
                PathwayRun(
                    study_uid=uid,
                    pathway="stroke_triage",
                    model_version="3",
                    outcome="routine",
                    score=0.1,
                    timings={
                        "received": received.isoformat(),
                        "started": (received + timedelta(seconds=6)).isoformat(),
                        "inferred": (received + timedelta(seconds=9)).isoformat(),
                        "worklist_done": (received + timedelta(seconds=12)).isoformat(),
                        "inference_s": 2.0,
                        "inference_cpu_s": 3.5,
                    },
                    features={"model_name": "pacsflow-ich"} if uid == "9.2" else {},
                    finished_at=now - timedelta(days=days),
                )
            )
        s.commit()


def test_runs_get_model_and_department_from_worklist_and_order(site: SampleSite) -> None:
    since = datetime.now(UTC) - timedelta(days=30)
    records = {r.study_uid: r for r in load_run_records(site.sessions, since)}
    assert "9.3" not in records  # finished 60 days ago
    assert records["9.1"].department == "ED"  # the order context says so
    assert records["9.2"].department == "unknown"  # no worklist row, no order
    assert records["9.2"].model_name == "pacsflow-ich"  # from the run's features
    sample = next(r for r in records.values() if r.study_uid.startswith("1.2.826"))
    assert (sample.department, sample.model_name) == ("neuro", "pacsflow-ich")
    assert len(load_run_records(site.sessions)) == 4


@pytest.fixture
def client(site: SampleSite) -> Iterator[TestClient]:
    with TestClient(site.app) as c:
        yield c


def bearer(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/auth/login", json={"username": username, "password": SAMPLE_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def sign_in(client: TestClient, username: str) -> None:
    r = client.post(
        "/login",
        data={"username": username, "password": SAMPLE_PASSWORD, "next": "/usage"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def test_usage_api_and_csv_for_the_auditor(client: TestClient, site: SampleSite) -> None:
    headers = bearer(client, "otto.auditor")
    body = client.get("/api/usage", headers=headers).json()
    assert body["days"] == 30
    rows = {r["department"]: r for r in body["rows"]}
    assert set(rows) == {"ED", "neuro", "unknown"}
    assert rows["ED"]["cpu_s"] == 3.5 and rows["ED"]["time_to_flag_p50_s"] == 12.0
    # The sample run recorded no writeback done: no time-to-flag, still counted.
    assert (rows["neuro"]["runs"], rows["neuro"]["time_to_flag_n"]) == (1, 0)
    exported = client.get("/api/usage.csv?days=90", headers=headers)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert tuple(table[0]) == USAGE_COLUMNS
    assert sum(int(r["runs"]) for r in table) == 4  # the 60-day-old run is in 90 days
    actions = [e.action for e in read_entries(site.sessions, AuditFilter(actor="otto.auditor"))]
    assert "usage.read" in actions and "usage.export" in actions
    assert client.get("/api/usage?days=0", headers=headers).status_code == 422


def test_usage_page_for_admin_not_for_clinicians(client: TestClient) -> None:
    sign_in(client, "ada.admin")
    page = client.get("/usage")
    assert page.status_code == 200
    assert 'href="/usage"' in page.text  # in the navigation
    assert page.text.count('class="usage-row"') == 3
    assert 'href="/usage.csv?days=30"' in page.text
    exported = client.get("/usage.csv")
    assert exported.status_code == 200 and exported.text.startswith("model_name,")

    client.cookies.clear()
    sign_in(client, "rita.resident")
    assert client.get("/usage").status_code == 403
    assert client.get("/usage.csv").status_code == 403
    assert 'href="/usage"' not in client.get("/worklist").text

    client.cookies.clear()
    anonymous = client.get("/usage", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
