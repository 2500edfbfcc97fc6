"""Hypothesis strategies for hostile requests to the signed webhook, each with its status.

The expected status comes from how the request was built, following the order of checks
the webhook documents (pacsflow.gateway.webhook): body over 64 KiB -> 413; signature
missing, malformed, stale, wrong or replayed -> 401; body not a valid trigger -> 422;
pathway in the path unknown -> 404; pathway missing, unknown in the body or contradicting
the path -> 422; otherwise 202. A path the webhook routes do not match at all (an empty or
slash-holding pathway segment) is 404 whatever the rest. Never a 500.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from .live import UID_ROOT

MAX_BODY_BYTES = 64 * 1024
KNOWN_PATHWAYS = ("stroke_triage", "nodule_followup", "screening_cohort")
ALLOWED = frozenset({202, 401, 404, 413, 422})
_MISSING = object()  # a body field left out


class Signing(Enum):
    VALID = "valid"
    VALID_UPPER_HEX = "valid, digest in upper case"
    WRONG_SECRET = "signed with another secret"
    OTHER_BODY = "signature of another body"
    STALE = "timestamp older than the window"
    FUTURE = "timestamp beyond the window ahead"
    NO_TIMESTAMP = "no timestamp header"
    NO_SIGNATURE = "no signature header"
    BAD_TIMESTAMP = "timestamp not unix seconds"
    BAD_SCHEME = "signature without 'sha256='"
    SHORT_DIGEST = "digest of 63 hex digits"
    NOT_HEX = "64 characters, not hex"

    @property
    def authentic(self) -> bool:
        return self in (Signing.VALID, Signing.VALID_UPPER_HEX)


@dataclass(frozen=True)
class HookCase:
    label: str
    path: str
    body: bytes
    signing: Signing
    expected: frozenset[int]
    routed: bool = True  # False: no webhook route matches the path (404 before anything)
    bad_timestamp: str = ""
    content_type: str = "application/json"
    replay: bool = False  # after a 202, send the very same request again: 401

    @property
    def checks_signature(self) -> bool:
        """Whether the webhook gets as far as verifying (and remembering) the signature."""
        return self.routed and len(self.body) <= MAX_BODY_BYTES

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 200 else self.body[:200] + b"..."
        return (
            f"HookCase({self.label!r}, {self.path!r}, {self.signing.name}, "
            f"expected={sorted(self.expected)}, {len(self.body)} bytes {body!r})"
        )


@dataclass(frozen=True)
class _Field:
    value: Any
    valid: bool


_serial = iter(range(10**9))
# Text a valid optional field may hold: printable ASCII, accents, CJK, emoji, NUL, bidi marks.
_TEXT = string.printable + "\u00e9\u00fc\u4e2d\u6587\U0001f6a8\u202e\x00\u0661"


@st.composite
def fresh_study_uids(draw: st.DrawFn) -> str:
    """A study UID no earlier request used (so a 202 creates a row). The drawn component
    only gives Hypothesis distinct examples to explore; the serial makes it unique."""
    return f"{UID_ROOT}.6.{draw(st.integers(1, 2**32))}.{1_000_000 + next(_serial)}"


@st.composite
def study_uids(draw: st.DrawFn) -> _Field:
    kind = draw(st.sampled_from(["fresh", "fresh", "fresh", "repeat", "padded", "bad", "none"]))
    if kind == "none":
        return _Field(_MISSING, False)
    if kind == "fresh":
        return _Field(draw(fresh_study_uids()), True)
    if kind == "repeat":  # the same (pathway, study) again: 202 with duplicate = true
        return _Field(f"{UID_ROOT}.6.42", True)
    if kind == "padded":  # surrounding whitespace is stripped
        return _Field(f"  {draw(fresh_study_uids())}\t", True)
    bad = draw(
        st.one_of(
            st.sampled_from(["", "abc", "1..2", ".1", "1.", "1.2.a", "1 .2", "\u0661.\u0662"]),
            st.sampled_from([None, 12, 1.5, True, [], {}, ["1.2"]]),
            st.integers(65, 300).map(lambda n: "1" * n),
            st.text(string.printable, max_size=30).filter(
                lambda s: not s.strip().replace(".", "").isdigit()
            ),
        )
    )
    return _Field(bad, False)


def optional_text(max_length: int) -> st.SearchStrategy[_Field]:
    """Mostly a valid value (or none), sometimes too long or of the wrong JSON type."""
    valid = st.one_of(st.just(_MISSING), st.just(None), st.text(_TEXT, max_size=max_length))
    too_long = st.integers(max_length + 1, max_length + 500).map(lambda n: "x" * n)
    wrong_type = st.sampled_from([12, 1.5, [], {"a": 1}, True])
    return st.integers(0, 9).flatmap(
        lambda roll: (
            valid.map(lambda v: _Field(v, True))
            if roll < 8
            else st.one_of(too_long, wrong_type).map(lambda v: _Field(v, False))
        )
    )


@st.composite
def triggers(draw: st.DrawFn) -> tuple[dict[str, Any], bool, Any]:
    """(JSON object, whether it is a valid trigger, its "pathway" value or _MISSING)."""
    fields = {
        "study_uid": draw(study_uids()),
        "accession_number": draw(optional_text(16)),
        "priority": draw(optional_text(16)),
        "requested_by": draw(optional_text(128)),
    }
    pathway = draw(
        st.one_of(
            st.just(_MISSING),
            st.just(None),
            st.sampled_from(KNOWN_PATHWAYS),
            st.sampled_from(KNOWN_PATHWAYS),
            st.sampled_from(["unknown_pathway", "STROKE_TRIAGE", "x" * 64]),
            st.sampled_from(["", "   ", "x" * 65, 7, ["stroke_triage"]]),
        )
    )
    pathway_valid = (
        pathway is _MISSING
        or pathway is None
        or (isinstance(pathway, str) and 1 <= len(pathway.strip()) <= 64)
    )
    body = {k: f.value for k, f in fields.items() if f.value is not _MISSING}
    if pathway is not _MISSING:
        body["pathway"] = pathway
    valid = pathway_valid and all(f.valid for f in fields.values())
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.sampled_from(["extra", "Study_UID", "__proto__", ""]))] = 1
        valid = False  # unknown fields are refused
    return body, valid, pathway


def _encode(body: dict[str, Any], style: str) -> bytes:
    if style == "compact":
        return json.dumps(body, separators=(",", ":")).encode()
    if style == "raw-utf8":
        return json.dumps(body, ensure_ascii=False).encode("utf-8")
    return json.dumps(body, indent=2).encode()


def not_triggers() -> st.SearchStrategy[bytes]:
    """Bodies that are not a JSON object at all."""
    return st.one_of(
        st.binary(max_size=400),
        st.sampled_from(
            [
                b"",
                b"null",
                b"[]",
                b'"1.2.3"',
                b"1e99999",
                b"{",
                b'{"study_uid": "1.2.3"',
                b'{"study_uid": "1.2.\\ud800"}',
                b'{"study_uid": "\xff\xfe"}',
                b"\xef\xbb\xbf{}",
                b'{"study_uid": NaN}',
                b"<xml/>",
            ]
        ),
        st.integers(150, 20_000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(150, 20_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.integers(300, 5_000).map(lambda n: b'{"study_uid": ' + b"9" * n + b"}"),
    )


def _path_for(segment: Any) -> tuple[str, bool | None]:
    """(request path, whether its pathway is known); None when no webhook route matches."""
    if segment is _MISSING:
        return "/hooks/studies", True
    if segment == "" or "/" in segment:
        return f"/hooks/{quote(segment, safe='')}/studies", None
    return f"/hooks/{quote(segment, safe='')}/studies", segment in KNOWN_PATHWAYS


def _expected(
    size: int, signing: Signing, routed: bool | None, body_valid: bool, path_pw: Any, body_pw: Any
) -> frozenset[int]:
    if routed is None:
        return frozenset({404})
    if size > MAX_BODY_BYTES:
        return frozenset({413})
    if not signing.authentic:
        return frozenset({401})
    if not body_valid:
        return frozenset({422})
    body_pw = None if body_pw is _MISSING else body_pw
    if path_pw is not _MISSING:
        if path_pw not in KNOWN_PATHWAYS:
            return frozenset({404})
        return frozenset({422 if body_pw is not None and body_pw != path_pw else 202})
    return frozenset({202 if body_pw in KNOWN_PATHWAYS else 422})


@st.composite
def acceptable_cases(draw: st.DrawFn) -> HookCase:
    """A trigger built to be accepted (202), however odd its valid text."""
    pathway = draw(st.sampled_from(KNOWN_PATHWAYS))
    obj: dict[str, Any] = {"study_uid": draw(fresh_study_uids())}
    for name, max_length in (("accession_number", 16), ("priority", 16), ("requested_by", 128)):
        value = draw(st.one_of(st.just(_MISSING), st.none(), st.text(_TEXT, max_size=max_length)))
        if value is not _MISSING:
            obj[name] = value
    route = draw(st.sampled_from(["body", "path", "both"]))
    if route != "path":
        obj["pathway"] = pathway
    path = "/hooks/studies" if route == "body" else f"/hooks/{pathway}/studies"
    body = _encode(obj, draw(st.sampled_from(["compact", "indented", "raw-utf8"])))
    if draw(st.booleans()):  # up to the size limit exactly
        body += b" " * (MAX_BODY_BYTES - len(body))
    return HookCase(
        label="acceptable",
        path=path,
        body=body,
        signing=draw(st.sampled_from([Signing.VALID, Signing.VALID_UPPER_HEX])),
        expected=frozenset({202}),
        replay=draw(st.integers(0, 3)) == 0,
    )


@st.composite
def hook_cases(draw: st.DrawFn) -> HookCase:
    if draw(st.integers(0, 3)) == 0:
        return draw(acceptable_cases())
    path_pathway = draw(
        st.one_of(
            st.just(_MISSING),
            st.just(_MISSING),
            st.sampled_from(KNOWN_PATHWAYS),
            st.sampled_from(KNOWN_PATHWAYS),
            st.sampled_from(["unknown", "Stroke_Triage", "stroke_triage ", "%", "stra\u00dfe"]),
            st.sampled_from(["", "a/b", "../studies"]),
            st.text(
                string.ascii_letters + string.digits + "_-~;,=@!$'()*+", min_size=1, max_size=60
            ),
        ).filter(lambda s: s not in (".", ".."))
    )
    path, known = _path_for(path_pathway)
    kind = draw(st.sampled_from(["trigger", "trigger", "trigger", "not json", "oversize"]))
    body_pathway: Any = _MISSING
    if kind == "not json":
        body, body_valid = draw(not_triggers()), False
    else:
        obj, body_valid, body_pathway = draw(triggers())
        body = _encode(obj, draw(st.sampled_from(["compact", "indented", "raw-utf8"])))
        if kind == "oversize":  # padding after the object keeps it valid JSON
            target = MAX_BODY_BYTES + draw(st.sampled_from([-1, 0, 1, 2, 5_000]))
            body += b" " * max(0, target - len(body))
    signing = draw(
        st.sampled_from(list(Signing)) if draw(st.booleans()) else st.just(Signing.VALID)
    )
    expected = _expected(len(body), signing, known, body_valid, path_pathway, body_pathway)
    return HookCase(
        label=kind,
        path=path,
        body=body,
        signing=signing,
        expected=expected,
        routed=known is not None,
        bad_timestamp=draw(st.sampled_from(["12a", "-5", "1.5e9", "", "0x10", "\u0661\u0662"])),
        content_type=draw(st.sampled_from(["application/json", "text/plain", "", "x/y; q=\u00e9"])),
        replay=expected == {202} and draw(st.integers(0, 3)) == 0,
    )
