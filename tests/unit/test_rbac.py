"""RBAC policy: the shipped default, validation of policy files, visibility and scoping."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsflow.errors import ConfigError
from pacsflow.governance.rbac import (
    DEFAULT_POLICY_FILE,
    AccessDenied,
    Action,
    Principal,
    Role,
    Visibility,
    can_view_case,
    load_policy,
    parse_policy,
    redact_result,
    require_action,
)

CASE = {
    "study_uid": "1.2.3",
    "accession_number": "A1",
    "department": "neuro",
    "pathway": "stroke_triage",
    "priority": "critical",
    "summary": "Suspected hemorrhage, 12 mL",
    "findings": [{"kind": "hemorrhage", "probability": 0.9}],
    "model_name": "ich",
    "model_version": "3",
}


def who(role: Role, *departments: str) -> Principal:
    return Principal("u", role, frozenset(departments), "session")


def test_default_policy_says_what_the_brief_says() -> None:
    policy = load_policy()
    assert policy.visibility(Role.RESIDENT) is Visibility.FULL
    assert policy.visibility(Role.ATTENDING) is Visibility.ALERT
    assert policy.visibility(Role.COORDINATOR) is Visibility.SCREENING
    assert policy.visibility(Role.AUDITOR) is Visibility.NONE
    assert policy.allows(Role.RESIDENT, Action.CONFIRM)
    assert policy.allows(Role.ATTENDING, Action.OVERRIDE)
    assert policy.allows(Role.ADMIN, Action.APPROVE_MODELS)
    assert policy.allows(Role.AUDITOR, Action.READ_AUDIT)
    assert not policy.allows(Role.RESIDENT, Action.READ_AUDIT)
    assert not policy.allows(Role.SERVICE, Action.CONFIRM)
    assert "nodule_followup" in policy.screening_pathways


def test_full_visibility_shows_findings_and_overlay() -> None:
    shown = redact_result(CASE, Visibility.FULL)
    assert shown["findings"] == CASE["findings"]
    assert shown["overlay"] is True


def test_alert_visibility_shows_priority_and_summary_only() -> None:
    shown = redact_result(CASE, Visibility.ALERT)
    assert shown["priority"] == "critical"
    assert shown["summary"] == CASE["summary"]
    assert "findings" not in shown and "model_version" not in shown
    assert shown["overlay"] is False


def test_screening_visibility_shows_findings_without_overlay() -> None:
    shown = redact_result(CASE, Visibility.SCREENING)
    assert shown["findings"] and shown["overlay"] is False


def test_no_visibility_refuses() -> None:
    with pytest.raises(AccessDenied):
        redact_result(CASE, Visibility.NONE)


@pytest.mark.parametrize(
    ("principal", "department", "pathway", "expected"),
    [
        (who(Role.RESIDENT, "neuro"), "neuro", "stroke_triage", True),
        (who(Role.RESIDENT, "chest"), "neuro", "stroke_triage", False),
        (who(Role.RESIDENT, "*"), "neuro", "stroke_triage", True),
        (who(Role.COORDINATOR, "*"), "neuro", "stroke_triage", False),
        (who(Role.COORDINATOR, "chest"), "chest", "nodule_followup", True),
        (who(Role.AUDITOR, "*"), "neuro", "stroke_triage", False),
        (who(Role.ATTENDING), "neuro", "stroke_triage", False),
    ],
)
def test_scope(principal: Principal, department: str, pathway: str, expected: bool) -> None:
    assert can_view_case(principal, load_policy(), department, pathway) is expected


def test_require_action_names_role_and_action() -> None:
    with pytest.raises(AccessDenied, match="'auditor' may not confirm"):
        require_action(who(Role.AUDITOR, "*"), load_policy(), Action.CONFIRM)


def _roles(**overrides: dict[str, object]) -> dict[str, object]:
    roles: dict[str, object] = {r.value: {"visibility": "none", "actions": []} for r in Role}
    roles.update(overrides)
    return {"roles": roles}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"roles": {}}, "role 'resident' is not defined"),
        (_roles(intern={"visibility": "full"}), "unknown roles"),
        (_roles(resident={"visibility": "most"}), "visibility must be one of"),
        (_roles(resident={"visibility": "full", "actions": ["fly"]}), "actions must be among"),
        (_roles(resident={"visibility": "full", "see": 1}), "unknown keys"),
        ({**_roles(), "extra": 1}, "unknown keys"),
        ({**_roles(), "screening_pathways": "nodule"}, "screening_pathways"),
    ],
)
def test_invalid_policies_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_policy(data)


def test_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("roles = [", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_policy(bad)


def test_site_policy_file_changes_visibility(tmp_path: Path) -> None:
    text = DEFAULT_POLICY_FILE.read_text(encoding="utf-8")
    site = tmp_path / "policy.toml"
    site.write_text(
        text.replace(
            '[roles.attending]\nvisibility = "alert"', '[roles.attending]\nvisibility = "full"'
        ),
        encoding="utf-8",
    )
    assert load_policy(site).visibility(Role.ATTENDING) is Visibility.FULL
