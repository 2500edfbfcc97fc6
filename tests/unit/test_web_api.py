"""The web API and pages in process (FastAPI TestClient) on a real SQLite database seeded
with the sample worklist: what each role sees, decisions, review queue, audit entries.
The full route x role matrix runs over a real socket in tests/integration/test_web_matrix.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from pacsflow.governance.audit_export import AuditFilter, read_entries
from pacsflow.governance.users import UserStore
from pacsflow.web.sample import (
    NODULE_URGENT,
    SAMPLE_PASSWORD,
    STROKE_CRITICAL,
    STROKE_REVIEW,
    STROKE_ROUTINE,
    SampleSite,
    build_sample_site,
)

RESIDENT, ATTENDING, COORDINATOR = "rita.resident", "alan.attending", "cora.coordinator"
ADMIN, AUDITOR, SERVICE = "ada.admin", "otto.auditor", "ris.integration"


@pytest.fixture
def site(tmp_path: Path) -> SampleSite:
    return build_sample_site(f"sqlite:///{tmp_path / 'web.db'}")


@pytest.fixture
def client(site: SampleSite) -> Iterator[TestClient]:
    with TestClient(site.app) as c:
        yield c


def bearer(client: TestClient, site: SampleSite, username: str) -> dict[str, str]:
    if username == SERVICE:
        return {"Authorization": f"Bearer {site.credentials[SERVICE]}"}
    r = client.post("/api/auth/login", json={"username": username, "password": SAMPLE_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def audit_actions(site: SampleSite, **where: Any) -> list[tuple[str, str, str]]:
    return [
        (e.actor, e.action, e.subject) for e in read_entries(site.sessions, AuditFilter(**where))
    ]


# --- what each role sees ------------------------------------------------------------------
def test_resident_sees_full_findings_and_overlay(client: TestClient, site: SampleSite) -> None:
    case = client.get(f"/api/cases/{STROKE_CRITICAL}", headers=bearer(client, site, RESIDENT))
    assert case.status_code == 200
    body = case.json()
    assert body["visibility"] == "full" and body["overlay"] is True
    assert body["findings"][0]["kind"] == "hemorrhage"
    assert body["findings"][0]["volume_ml"] == pytest.approx(12.4)
    assert body["key_image_url"] == f"/api/cases/{STROKE_CRITICAL}/key-image"
    assert [p["study_uid"] for p in body["priors"]] == [STROKE_ROUTINE]
    assert body["timeline"][0]["outcome"] == "critical"


def test_attending_sees_the_alert_only(client: TestClient, site: SampleSite) -> None:
    headers = bearer(client, site, ATTENDING)
    body = client.get(f"/api/cases/{STROKE_CRITICAL}", headers=headers).json()
    assert body["priority"] == "critical"
    assert body["summary"].startswith("Suspected intracranial hemorrhage")
    assert "findings" not in body and "model_version" not in body
    assert body["overlay"] is False and body["key_image_url"] is None
    image = client.get(f"/api/cases/{STROKE_CRITICAL}/key-image", headers=headers)
    assert image.status_code == 403


def test_coordinator_sees_screening_cases_of_their_department_only(
    client: TestClient, site: SampleSite
) -> None:
    headers = bearer(client, site, COORDINATOR)
    items = client.get("/api/worklist", headers=headers).json()["items"]
    assert [i["study_uid"] for i in items] == [NODULE_URGENT]
    body = client.get(f"/api/cases/{NODULE_URGENT}", headers=headers).json()
    assert body["findings"][0]["kind"] == "nodule" and body["overlay"] is False
    assert client.get(f"/api/cases/{STROKE_CRITICAL}", headers=headers).status_code == 404


def test_worklist_is_in_reading_order_and_department_scoped(
    client: TestClient, site: SampleSite
) -> None:
    items = client.get("/api/worklist", headers=bearer(client, site, RESIDENT)).json()["items"]
    assert [(i["study_uid"], i["priority"]) for i in items] == [
        (STROKE_CRITICAL, "critical"),
        (STROKE_REVIEW, "review"),
        (STROKE_ROUTINE, "routine"),
    ]
    assert all("findings" not in i for i in items)
    service = client.get("/api/worklist", headers=bearer(client, site, SERVICE)).json()["items"]
    assert [i["study_uid"] for i in service] == [
        STROKE_CRITICAL,
        NODULE_URGENT,
        STROKE_REVIEW,
        STROKE_ROUTINE,
    ]


def test_every_result_view_is_audited(client: TestClient, site: SampleSite) -> None:
    headers = bearer(client, site, RESIDENT)
    client.get(f"/api/cases/{STROKE_CRITICAL}", headers=headers)
    client.get(f"/api/cases/{STROKE_CRITICAL}/key-image", headers=headers)
    views = read_entries(site.sessions, AuditFilter(action="result.view"))
    assert [(v.actor, v.subject, v.detail["part"]) for v in views] == [
        (RESIDENT, STROKE_CRITICAL, "case"),
        (RESIDENT, STROKE_CRITICAL, "key_image"),
    ]
    assert views[0].detail["role"] == "resident" and views[0].detail["accession"] == "A1001"


# --- decisions and the review queue -------------------------------------------------------
def test_confirm_is_stored_as_label_and_audited(client: TestClient, site: SampleSite) -> None:
    r = client.post(
        f"/api/cases/{STROKE_CRITICAL}/decision",
        json={"decision": "confirm", "finding_index": 0},
        headers=bearer(client, site, RESIDENT),
    )
    assert r.status_code == 201, r.text
    label = r.json()
    assert (label["decision"], label["actor"], label["actor_role"]) == (
        "confirm",
        RESIDENT,
        "resident",
    )
    entries = read_entries(site.sessions, AuditFilter(action="result.confirm"))
    assert [e.id for e in entries] == [label["audit_entry_id"]]
    assert entries[0].detail["model_version"] == "3" and entries[0].detail["finding_index"] == 0
    with site.sessions() as s:
        row = s.execute(text("SELECT decision, ai_priority, model_name FROM feedback_labels")).one()
    assert tuple(row) == ("confirm", "critical", "pacsflow-ich")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"decision": "reject"}, "a reason is required to reject"),
        ({"decision": "override", "reason": "x"}, "corrected priority"),
        ({"decision": "override", "corrected_priority": "routine"}, "a reason is required"),
        ({"decision": "confirm", "corrected_priority": "routine"}, "override only"),
        ({"decision": "maybe"}, "Input should be"),
        ({"decision": "confirm", "finding_index": 5}, "out of range"),
    ],
)
def test_invalid_decisions_are_refused(
    client: TestClient, site: SampleSite, body: dict[str, Any], message: str
) -> None:
    r = client.post(
        f"/api/cases/{STROKE_CRITICAL}/decision", json=body, headers=bearer(client, site, RESIDENT)
    )
    assert r.status_code == 422
    assert message in r.text
    assert audit_actions(site, action="result.") == []


def test_override_changes_the_effective_priority(client: TestClient, site: SampleSite) -> None:
    headers = bearer(client, site, ATTENDING)
    r = client.post(
        f"/api/cases/{STROKE_ROUTINE}/decision",
        json={"decision": "override", "corrected_priority": "critical", "reason": "missed SDH"},
        headers=headers,
    )
    assert r.status_code == 201
    items = client.get("/api/worklist", headers=headers).json()["items"]
    first = items[0]
    assert (first["study_uid"], first["priority"], first["effective_priority"]) == (
        STROKE_ROUTINE,
        "routine",
        "critical",
    )
    assert audit_actions(site, action="result.override") == [
        (ATTENDING, "result.override", STROKE_ROUTINE)
    ]


def test_review_queue_holds_undecided_uncertain_results(
    client: TestClient, site: SampleSite
) -> None:
    headers = bearer(client, site, RESIDENT)
    queue = client.get("/api/review", headers=headers).json()["items"]
    assert [i["study_uid"] for i in queue] == [STROKE_REVIEW]
    client.post(
        f"/api/cases/{STROKE_REVIEW}/decision",
        json={"decision": "reject", "reason": "beam-hardening artefact"},
        headers=headers,
    )
    assert client.get("/api/review", headers=headers).json()["items"] == []


# --- audit endpoints ------------------------------------------------------------------------
def test_logins_are_audited_including_failures(client: TestClient, site: SampleSite) -> None:
    bearer(client, site, RESIDENT)
    r = client.post("/api/auth/login", json={"username": RESIDENT, "password": "wrong-password"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert audit_actions(site, action="auth.") == [
        (RESIDENT, "auth.login", RESIDENT),
        ("anonymous", "auth.login_failed", RESIDENT),
    ]


def test_audit_listing_filters_and_is_itself_audited(client: TestClient, site: SampleSite) -> None:
    client.get(f"/api/cases/{STROKE_CRITICAL}", headers=bearer(client, site, RESIDENT))
    headers = bearer(client, site, AUDITOR)
    body = client.get("/api/audit", params={"action": "result."}, headers=headers).json()
    assert body["total"] == 1
    assert body["items"][0]["actor"] == RESIDENT and len(body["items"][0]["hash"]) == 64
    assert audit_actions(site, action="audit.read") == [(AUDITOR, "audit.read", "audit_log")]


def test_verify_endpoint_names_the_tampered_entry(client: TestClient, site: SampleSite) -> None:
    client.get(f"/api/cases/{STROKE_CRITICAL}", headers=bearer(client, site, RESIDENT))
    target = read_entries(site.sessions, AuditFilter(action="result.view"))[0]
    headers = bearer(client, site, AUDITOR)
    assert client.get("/api/audit/verify", headers=headers).json()["intact"] is True
    with site.sessions() as s:
        s.execute(
            text("UPDATE audit_log SET actor = 'someone.else' WHERE id = :i"), {"i": target.id}
        )
        s.commit()
    body = client.get("/api/audit/verify", headers=headers).json()
    assert body["intact"] is False
    assert body["problems"] == [f"entry {target.id}: content does not match its hash (edited)"]


def test_models_and_approval(client: TestClient, site: SampleSite) -> None:
    versions = client.get("/api/models", headers=bearer(client, site, ATTENDING)).json()
    assert [(v["name"], v["version"], v["approved"]) for v in versions["versions"]] == [
        ("pacsflow-ich", "3", True),
        ("pacsflow-ich", "4", False),
    ]
    r = client.post(
        "/api/models/pacsflow-ich/versions/4/approval",
        json={"evidence_run": "run-9", "intended_use": "ICH triage", "limitations": "synthetic"},
        headers=bearer(client, site, ADMIN),
    )
    assert r.status_code == 201 and r.json()["approval"]["approved_by"] == ADMIN
    assert audit_actions(site, action="model.approve") == [
        (ADMIN, "model.approve", "pacsflow-ich/4")
    ]


def test_disabled_user_is_refused_at_once(client: TestClient, site: SampleSite) -> None:
    headers = bearer(client, site, RESIDENT)
    UserStore(site.sessions).disable(RESIDENT)
    r = client.get("/api/worklist", headers=headers)
    assert r.status_code == 401 and "disabled" in r.json()["detail"]


def test_responses_carry_no_store_and_security_headers(
    client: TestClient, site: SampleSite
) -> None:
    r = client.get(f"/api/cases/{STROKE_CRITICAL}", headers=bearer(client, site, RESIDENT))
    assert r.headers["cache-control"] == "no-store"
    assert "script-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


# --- pages -----------------------------------------------------------------------------------
def ui_login(client: TestClient, username: str) -> None:
    r = client.post(
        "/login",
        data={"username": username, "password": SAMPLE_PASSWORD, "next": "/worklist"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/worklist"
    assert "httponly" in r.headers["set-cookie"].lower()
    assert "samesite=strict" in r.headers["set-cookie"].lower()


def test_pages_redirect_to_login_without_session(client: TestClient) -> None:
    for path in ("/", "/worklist", f"/cases/{STROKE_CRITICAL}", "/audit?action=result.", "/models"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next=/")
    assert client.get("/login").status_code == 200


def test_bad_login_page(client: TestClient) -> None:
    r = client.post("/login", data={"username": RESIDENT, "password": "nope-nope-nope"})
    assert r.status_code == 401 and "Unknown user or wrong password" in r.text


def test_case_page_by_role(client: TestClient) -> None:
    ui_login(client, RESIDENT)
    page = client.get(f"/cases/{STROKE_CRITICAL}")
    assert page.status_code == 200
    assert 'id="findings"' in page.text and 'id="key-image"' in page.text
    assert 'name="decision" value="override"' in page.text
    png = client.get(f"/cases/{STROKE_CRITICAL}/key-image.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")

    client.cookies.clear()
    ui_login(client, ATTENDING)
    page = client.get(f"/cases/{STROKE_CRITICAL}")
    assert 'id="findings"' not in page.text and 'id="key-image"' not in page.text
    assert "sees the alert only" in page.text
    assert client.get(f"/cases/{STROKE_CRITICAL}/key-image.png").status_code == 403


def test_decision_form_needs_csrf_token(client: TestClient, site: SampleSite) -> None:
    ui_login(client, RESIDENT)
    page = client.get(f"/cases/{STROKE_CRITICAL}").text
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert token is not None
    forged = client.post(
        f"/cases/{STROKE_CRITICAL}/decision", data={"decision": "confirm", "csrf": "0" * 40}
    )
    assert forged.status_code == 403
    missing_reason = client.post(
        f"/cases/{STROKE_CRITICAL}/decision", data={"decision": "reject", "csrf": token[1]}
    )
    assert missing_reason.status_code == 422 and "a reason is required" in missing_reason.text
    ok = client.post(
        f"/cases/{STROKE_CRITICAL}/decision",
        data={"decision": "confirm", "csrf": token[1]},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    assert audit_actions(site, action="result.confirm") == [
        (RESIDENT, "result.confirm", STROKE_CRITICAL)
    ]


def test_pages_refuse_roles_without_permission(client: TestClient) -> None:
    ui_login(client, RESIDENT)
    assert client.get("/audit").status_code == 403
    assert client.get("/models").status_code == 403
    client.cookies.clear()
    r = client.post(
        "/login",
        data={"username": AUDITOR, "password": SAMPLE_PASSWORD, "next": "/"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    home = client.get("/", follow_redirects=False)
    assert home.headers["location"] == "/models"
    assert client.get("/worklist").status_code == 403
    assert client.get("/audit?verify=1").status_code == 200


def test_login_next_is_same_site_only(client: TestClient) -> None:
    r = client.post(
        "/login",
        data={"username": RESIDENT, "password": SAMPLE_PASSWORD, "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/"


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_pages_escape_stored_text(client: TestClient, site: SampleSite) -> None:
    with site.sessions() as s:
        s.execute(
            text("UPDATE worklist SET summary = '<script>alert(1)</script>' WHERE study_uid = :u"),
            {"u": STROKE_CRITICAL},
        )
        s.commit()
    ui_login(client, RESIDENT)
    for path in ("/worklist", f"/cases/{STROKE_CRITICAL}"):
        page = client.get(path).text
        assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
