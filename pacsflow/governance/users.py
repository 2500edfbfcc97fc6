"""Local users (argon2 password hashes) and service accounts (API tokens).

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106). API tokens carry
256 random bits, so a plain SHA-256 is enough to store them; the token itself is shown
once, when it is issued.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pacsflow.db.tables import ApiToken, User
from pacsflow.errors import InvalidInputError
from pacsflow.governance.rbac import ALL_DEPARTMENTS, AuthenticationError, Principal, Role

LOCAL = "local"
SERVICE = "service"
API_TOKEN_PREFIX = "pfs_"
MIN_PASSWORD_LENGTH = 10
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_DEPARTMENT = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9._ -]{0,63}")


class UserExistsError(InvalidInputError):
    """A user with this name exists already."""


class UnknownUserError(InvalidInputError):
    """No user with this name."""


@dataclass(frozen=True)
class UserRecord:
    username: str
    role: Role
    departments: tuple[str, ...]
    kind: str
    disabled: bool
    created_at: datetime

    def principal(self, method: str) -> Principal:
        return Principal(self.username, self.role, frozenset(self.departments), method)


def _record(row: User) -> UserRecord:
    return UserRecord(
        username=row.username,
        role=Role(row.role),
        departments=tuple(row.departments or ()),
        kind=row.kind,
        disabled=row.disabled,
        created_at=row.created_at,
    )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def validate_username(username: str) -> str:
    if not _USERNAME.fullmatch(username):
        raise InvalidInputError(
            f"invalid username {username!r}: 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return username


def validate_departments(departments: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    for d in departments:
        if not _DEPARTMENT.fullmatch(d):
            raise InvalidInputError(f"invalid department {d!r}")
    return tuple(dict.fromkeys(departments))


class UserStore:
    """Users and tokens in pacsflow's database."""

    def __init__(
        self, sessions: sessionmaker[Session], hasher: PasswordHasher | None = None
    ) -> None:
        self.sessions = sessions
        self.hasher = hasher or PasswordHasher()
        # Verified against when the user is unknown, so timing does not reveal who exists.
        self._dummy_hash = self.hasher.hash(secrets.token_hex(16))

    # --- administration -------------------------------------------------------------
    def add(
        self,
        username: str,
        *,
        role: Role,
        departments: list[str] | tuple[str, ...] = (),
        password: str | None = None,
    ) -> UserRecord:
        """A local user (password required) or, for role service, a service account
        (no password; issue API tokens with `issue_api_token`)."""
        validate_username(username)
        depts = validate_departments(departments)
        kind = SERVICE if role is Role.SERVICE else LOCAL
        if kind == LOCAL:
            if password is None or len(password) < MIN_PASSWORD_LENGTH:
                raise InvalidInputError(
                    f"a password of at least {MIN_PASSWORD_LENGTH} characters is required"
                )
        elif password is not None:
            raise InvalidInputError("service accounts sign in with API tokens, not passwords")
        with self.sessions() as session:
            if session.scalar(select(User).where(User.username == username)) is not None:
                raise UserExistsError(f"user {username!r} exists already")
            row = User(
                username=username,
                role=role.value,
                departments=list(depts),
                kind=kind,
                password_hash=self.hasher.hash(password) if password is not None else None,
                disabled=False,
            )
            session.add(row)
            session.commit()
            return _record(row)

    def get(self, username: str) -> UserRecord | None:
        with self.sessions() as session:
            row = session.scalar(select(User).where(User.username == username))
            return _record(row) if row is not None else None

    def list(self) -> list[UserRecord]:
        with self.sessions() as session:
            return [_record(r) for r in session.scalars(select(User).order_by(User.username))]

    def disable(self, username: str) -> UserRecord:
        """Disable a user; their sessions and API tokens stop working at once."""
        with self.sessions() as session:
            row = session.scalar(select(User).where(User.username == username))
            if row is None:
                raise UnknownUserError(f"no user {username!r}")
            row.disabled = True
            row.disabled_at = datetime.now(UTC)
            for token in session.scalars(
                select(ApiToken).where(ApiToken.username == username, ApiToken.revoked_at.is_(None))
            ):
                token.revoked_at = row.disabled_at
            session.commit()
            return _record(row)

    def issue_api_token(self, username: str) -> str:
        """A new API token for a service account; only its digest is stored."""
        with self.sessions() as session:
            row = session.scalar(select(User).where(User.username == username))
            if row is None:
                raise UnknownUserError(f"no user {username!r}")
            if row.kind != SERVICE:
                raise InvalidInputError(f"{username!r} is not a service account")
            if row.disabled:
                raise InvalidInputError(f"{username!r} is disabled")
            token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
            session.add(ApiToken(username=username, token_hash=token_digest(token)))
            session.commit()
            return token

    # --- authentication -------------------------------------------------------------
    def verify_password(self, username: str, password: str) -> UserRecord:
        """The user, if the password is right and the account active; else
        AuthenticationError with the same message whatever was wrong."""
        refused = AuthenticationError("unknown user or wrong password")
        with self.sessions() as session:
            row = session.scalar(select(User).where(User.username == username))
            if row is None or row.password_hash is None:
                self._verify_quietly(self._dummy_hash, password)
                raise refused
            if not self._verify_quietly(row.password_hash, password) or row.disabled:
                raise refused
            if self.hasher.check_needs_rehash(row.password_hash):
                row.password_hash = self.hasher.hash(password)
                session.commit()
            return _record(row)

    def authenticate_api_token(self, token: str) -> UserRecord:
        with self.sessions() as session:
            found = session.execute(
                select(ApiToken, User)
                .join(User, User.username == ApiToken.username)
                .where(ApiToken.token_hash == token_digest(token))
            ).first()
            if found is None:
                raise AuthenticationError("unknown API token")
            token_row, user = found
            if token_row.revoked_at is not None or user.disabled:
                raise AuthenticationError("API token revoked or account disabled")
            return _record(user)

    def _verify_quietly(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


__all__ = [
    "ALL_DEPARTMENTS",
    "LOCAL",
    "SERVICE",
    "UnknownUserError",
    "UserExistsError",
    "UserRecord",
    "UserStore",
]
