"""Role-based access to AI results: who sees what of a result, and who may do what.

The policy is data (a TOML file, `policy.default.toml` shipped beside this module): for
each role, a visibility level and a set of actions. Department scoping is per user: a
principal sees only cases whose department is one of theirs ("*" = every department).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pacsflow.errors import ConfigError, PermanentError

DEFAULT_POLICY_FILE = Path(__file__).resolve().parent / "policy.default.toml"
ALL_DEPARTMENTS = "*"


class Role(StrEnum):
    RESIDENT = "resident"
    ATTENDING = "attending"
    COORDINATOR = "coordinator"
    ADMIN = "admin"
    AUDITOR = "auditor"
    SERVICE = "service"


class Visibility(StrEnum):
    """How much of an AI result a role sees."""

    FULL = "full"  # findings, measurements, overlay on the key image
    ALERT = "alert"  # priority and the one-line summary only
    SCREENING = "screening"  # cases of screening pathways only: priority, summary, findings
    NONE = "none"  # no AI results at all


class Action(StrEnum):
    CONFIRM = "confirm"
    REJECT = "reject"
    OVERRIDE = "override"
    REVIEW = "review"  # see the queue of uncertain findings
    READ_AUDIT = "read_audit"
    READ_MODELS = "read_models"
    APPROVE_MODELS = "approve_models"
    READ_USAGE = "read_usage"  # inference counts, compute, time-to-flag


class AuthenticationError(PermanentError):
    """Who is asking is unknown or unproven (HTTP 401)."""


class AccessDenied(PermanentError, PermissionError):
    """The principal is known but the policy does not allow this (HTTP 403)."""


@dataclass(frozen=True)
class RolePolicy:
    visibility: Visibility
    actions: frozenset[Action]


@dataclass(frozen=True)
class Policy:
    roles: Mapping[Role, RolePolicy]
    screening_pathways: frozenset[str] = field(default_factory=frozenset)

    def visibility(self, role: Role) -> Visibility:
        return self.roles[role].visibility

    def allows(self, role: Role, action: Action) -> bool:
        return action in self.roles[role].actions


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a local user, a service account or an OIDC subject."""

    username: str
    role: Role
    departments: frozenset[str]
    method: str  # password | session | oidc | api_token

    def in_department(self, department: str) -> bool:
        return ALL_DEPARTMENTS in self.departments or department in self.departments


def parse_policy(data: Mapping[str, Any], source: str = "policy") -> Policy:
    """Build a Policy from parsed TOML; every role must be defined, nothing unknown allowed."""
    unknown_top = set(data) - {"roles", "screening_pathways"}
    if unknown_top:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown_top)}")
    raw_roles = data.get("roles")
    if not isinstance(raw_roles, Mapping):
        raise ConfigError(f"{source}: a [roles.<name>] table per role is required")
    unknown_roles = set(raw_roles) - {r.value for r in Role}
    if unknown_roles:
        raise ConfigError(f"{source}: unknown roles {sorted(unknown_roles)}")
    roles: dict[Role, RolePolicy] = {}
    for role in Role:
        entry = raw_roles.get(role.value)
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{source}: role {role.value!r} is not defined")
        extra = set(entry) - {"visibility", "actions"}
        if extra:
            raise ConfigError(f"{source}: role {role.value!r}: unknown keys {sorted(extra)}")
        try:
            visibility = Visibility(entry.get("visibility"))
        except ValueError:
            allowed = [v.value for v in Visibility]
            raise ConfigError(
                f"{source}: role {role.value!r}: visibility must be one of {allowed}"
            ) from None
        actions_raw = entry.get("actions", [])
        if not isinstance(actions_raw, list):
            raise ConfigError(f"{source}: role {role.value!r}: actions must be a list")
        try:
            actions = frozenset(Action(a) for a in actions_raw)
        except ValueError:
            allowed = [a.value for a in Action]
            raise ConfigError(
                f"{source}: role {role.value!r}: actions must be among {allowed}, got {actions_raw}"
            ) from None
        roles[role] = RolePolicy(visibility=visibility, actions=actions)
    screening = data.get("screening_pathways", [])
    if not isinstance(screening, list) or not all(isinstance(p, str) for p in screening):
        raise ConfigError(f"{source}: screening_pathways must be a list of pathway names")
    return Policy(roles=roles, screening_pathways=frozenset(screening))


def load_policy(path: Path | None = None) -> Policy:
    """The policy from `path`, or the shipped default."""
    path = path or DEFAULT_POLICY_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"policy file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy file {path} is not valid TOML: {exc}") from None
    return parse_policy(data, str(path))


def can_view_case(principal: Principal, policy: Policy, department: str, pathway: str) -> bool:
    """Whether the case is in the principal's scope at all (department, screening pathways)."""
    visibility = policy.visibility(principal.role)
    if visibility is Visibility.NONE or not principal.in_department(department):
        return False
    return visibility is not Visibility.SCREENING or pathway in policy.screening_pathways


def require_action(principal: Principal, policy: Policy, action: Action) -> None:
    if not policy.allows(principal.role, action):
        what = action.value.replace("_", " ")
        raise AccessDenied(f"role {principal.role.value!r} may not {what}")


def require_results_visible(principal: Principal, policy: Policy) -> Visibility:
    visibility = policy.visibility(principal.role)
    if visibility is Visibility.NONE:
        raise AccessDenied(f"role {principal.role.value!r} does not see AI results")
    return visibility


def redact_result(case: Mapping[str, Any], visibility: Visibility) -> dict[str, Any]:
    """What of one AI result a visibility level shows. `case` holds the worklist fields
    (study_uid, accession_number, department, pathway, priority, summary, findings, model)."""
    if visibility is Visibility.NONE:
        raise AccessDenied("no AI result is visible at this level")
    shown: dict[str, Any] = {
        "study_uid": case["study_uid"],
        "accession_number": case.get("accession_number"),
        "department": case.get("department"),
        "pathway": case.get("pathway"),
        "priority": case["priority"],
        "summary": case.get("summary", ""),
        "visibility": visibility.value,
    }
    if visibility in (Visibility.FULL, Visibility.SCREENING):
        shown["findings"] = list(case.get("findings") or [])
        shown["model_name"] = case.get("model_name")
        shown["model_version"] = case.get("model_version")
    shown["overlay"] = visibility is Visibility.FULL
    return shown
