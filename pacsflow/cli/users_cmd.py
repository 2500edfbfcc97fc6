"""`pacsflow users add|list|disable|token`: local users and service accounts of the web app."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from pacsflow.config import Settings
from pacsflow.db.session import make_engine, make_sessionmaker, upgrade
from pacsflow.errors import InvalidInputError
from pacsflow.governance.audit import AuditLog, cli_actor
from pacsflow.governance.rbac import Role
from pacsflow.governance.users import MIN_PASSWORD_LENGTH, UserStore


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "users",
        help="users of the web UI/API: add, list, disable; API tokens of service accounts",
        description="Local users sign in with a password (stored as an argon2 hash); service "
        "accounts (role service) use API tokens. Roles and departments decide what each user "
        "sees of AI results (see the RBAC policy file). Every change is audited.",
    )
    usub = p.add_subparsers(dest="users_cmd", required=True, metavar="ACTION")

    add = usub.add_parser("add", help="add a user (or, with --role service, a service account)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument(
        "--department",
        action="append",
        default=[],
        dest="departments",
        help="a department whose cases the user sees (repeatable; '*' = all)",
    )
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (else: prompt)",
    )
    add.set_defaults(handler=run_add)

    ls = usub.add_parser("list", help="list users")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(handler=run_list)

    disable = usub.add_parser("disable", help="disable a user (sessions and tokens stop)")
    disable.add_argument("username")
    disable.set_defaults(handler=run_disable)

    token = usub.add_parser("token", help="issue a new API token for a service account")
    token.add_argument("username")
    token.set_defaults(handler=run_token)


def _store(settings: Settings) -> tuple[UserStore, AuditLog]:
    upgrade(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    return UserStore(sessions), AuditLog(sessions)


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise InvalidInputError("the passwords differ")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInputError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    return password


def run_add(args: argparse.Namespace, settings: Settings) -> int:
    role = Role(args.role)
    users, audit = _store(settings)
    password = None if role is Role.SERVICE else read_password(args.password_stdin)
    user = users.add(args.username, role=role, departments=args.departments, password=password)
    audit.append(
        cli_actor(),
        "user.add",
        user.username,
        {"role": user.role.value, "departments": list(user.departments), "kind": user.kind},
    )
    print(f"added {user.kind} user {user.username} ({user.role.value})")
    if role is Role.SERVICE:
        token = users.issue_api_token(user.username)
        audit.append(cli_actor(), "user.token", user.username, {"kind": user.kind})
        print("API token (shown once; send as 'Authorization: Bearer <token>'):")
        print(token)
    return 0


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    users, _ = _store(settings)
    rows = users.list()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "username": u.username,
                        "role": u.role.value,
                        "departments": list(u.departments),
                        "kind": u.kind,
                        "disabled": u.disabled,
                        "created_at": u.created_at.isoformat(),
                    }
                    for u in rows
                ],
                indent=2,
            )
        )
        return 0
    if not rows:
        print("no users")
        return 0
    print(f"{'username':24} {'role':12} {'kind':8} {'state':9} departments")
    for u in rows:
        state = "disabled" if u.disabled else "active"
        print(f"{u.username:24} {u.role.value:12} {u.kind:8} {state:9} {','.join(u.departments)}")
    return 0


def run_disable(args: argparse.Namespace, settings: Settings) -> int:
    users, audit = _store(settings)
    user = users.disable(args.username)
    audit.append(cli_actor(), "user.disable", user.username, {"role": user.role.value})
    print(f"disabled {user.username}")
    return 0


def run_token(args: argparse.Namespace, settings: Settings) -> int:
    users, audit = _store(settings)
    token = users.issue_api_token(args.username)
    audit.append(cli_actor(), "user.token", args.username, {"kind": "service"})
    print(token)
    return 0
