"""Hypothesis strategies for hostile HL7 v2 over MLLP, each case with the answer it must get.

The oracle comes from how a case was built, not from pacsflow's parser: a case whose MSH
the generator wrote with readable delimiters must get an ACK (HL7 v2.5.1 2.14.1) whose
MSA-1 is AA, AE or AR (table 0008) and whose MSA-2 is the MSH-10 the generator put there
(as a reader sees it: first component, escapes resolved, HL7 2.7). Where the generator
knows more (type not supported, MSH-10 or MSH-12 missing, a segment name that is not one)
AA is ruled out; an untouched supported message must get AA. Bytes that are not MLLP
(outside a frame, a start block inside a frame, a frame that never ends) and frames with
no MSH must get the connection closed, with nothing written back.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, replace
from enum import Enum

from hypothesis import strategies as st

from pacsflow.hl7.encoding import Encoding

START, END = b"\x0b", b"\x1c\r"
ALNUM = string.ascii_letters + string.digits
ID_CHARS = ALNUM + ".-_"
ALL_CODES = frozenset({"AA", "AE", "AR"})
NOT_ACCEPTED = frozenset({"AE", "AR"})
# HL7 v2.5.1 message types pacsflow takes (pacsflow.hl7.interpret); anything else is AR.
SUPPORTED = frozenset(
    {("ORM", "O01"), ("OMI", "O23"), ("ADT", "A01"), ("ADT", "A04"), ("ADT", "A08"), ("ADT", "A40")}
)
# A text value here never holds segment ends or MLLP blocks: framing has its own cases.
_FRAMING_CHARS = str.maketrans("", "", "\r\n\x0b\x1c")
# What a receiver skips before MSH (BOM, whitespace, NUL).
_LEADING = "\ufeff \t\r\n\x00"


class Reply(Enum):
    ACK = "an ACK"
    CLOSE = "the connection closed with no reply"
    ACK_OR_CLOSE = "an ACK or the connection closed"


@dataclass(frozen=True)
class Hl7Case:
    label: str
    wire: bytes
    reply: Reply
    control_id: str = ""  # MSH-10 as a reader sees it
    codes: frozenset[str] = ALL_CODES  # acceptable MSA-1 codes
    accession: str | None = None  # an order that must be in the database when AA
    half_close: bool = False  # shut our sending side after the bytes (a frame never ended)

    def __repr__(self) -> str:  # keep hypothesis' falsifying example readable
        wire = self.wire if len(self.wire) <= 300 else self.wire[:300] + b"..."
        return f"Hl7Case({self.label!r}, {self.reply.name}, codes={sorted(self.codes)}, {wire!r})"


CONTROL_ID_KINDS = (
    "plain",
    "plain",
    "component",
    "repetition",
    "escaped",
    "long",
    "unicode",
    "padded",
    "empty",
)
UNSUPPORTED = (
    ("SIU", "S12"),
    ("ORU", "R01"),
    ("ADT", "A99"),
    ("ACK", "O01"),
    ("ORM", "O02"),
    ("QBP", "Q11"),
    ("MFN", "M01"),
    ("ADT", "A40A"),
)
NOT_MLLP_KINDS = (
    "unframed",
    "http",
    "tls",
    "binary",
    "start inside",
    "never ends",
    "bad end",
    "framed junk",
    "framed junk",
)
# Not segment names (HL7 2.5.2: three characters, an upper-case letter then letters/digits).
NOT_SEGMENT_NAMES = ("pid", "P1", "1AB", "TOOLONG", "P-D")
ENCODINGS = (Encoding(), Encoding(), Encoding(), Encoding("#", "$", "%", "!", "*"))
# MSH-1/MSH-2 no reader can use: repeated or alphanumeric delimiters, MSH-2 too long/short.
BROKEN_MSH_STARTS = (
    "MSH|^^\\&|",
    "MSHA^~\\&A",
    "MSH|^~\\&#!|",
    "MSH||",
    "MSH",
    "MSH|",
    "MSH1^~\\&1",
)


def _clean(text: str) -> str:
    return text.translate(_FRAMING_CHARS)


def ids() -> st.SearchStrategy[str]:
    return st.text(ID_CHARS, min_size=1, max_size=20)


def hostile_values(enc: Encoding, *, in_msh: bool = False) -> st.SearchStrategy[str]:
    """Field content a broken sender writes: delimiters and escapes in odd places, control
    characters, binary junk, very long values, nothing at all."""
    alphabet = "".join(enc.delimiters) + "abcXYZ019 \t'\"<>%;\x00\x01\x7f\u00e9\u00ff\u202e"
    junk = st.one_of(
        st.text(alphabet, max_size=40),
        st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
        st.integers(1_000, 120_000).map(lambda n: "X" * n),
        st.sampled_from(["", '""', "\\X0\\", "\\Xzz\\", "\\", "\\.br\\", "\\H\\x\\N\\"]),
    )
    cleaned = junk.map(_clean)
    if in_msh:  # a field separator in MSH-3..8 would move MSH-9/10/12 the oracle relies on
        return cleaned.map(lambda s: s.replace(enc.field, ""))
    return cleaned


@st.composite
def control_ids(draw: st.DrawFn, enc: Encoding) -> tuple[str, str]:
    """(MSH-10 as written, as a reader sees it)."""
    kind = draw(st.sampled_from(CONTROL_ID_KINDS))
    if kind == "empty":
        return "", ""
    if kind == "long":
        n = draw(st.integers(1_000, 20_000))
        value = "L" * n + str(n)
        return value, value
    if kind == "unicode":
        value = draw(
            st.sampled_from(["\u00c4rzte-1", "\u60a3\u8005-7", "na\u00efve_9", "\U0001f600-x"])
        )
        return value, value
    plain = draw(ids())
    if kind == "component":
        return plain + enc.component + draw(ids()), plain
    if kind == "repetition":
        return plain + enc.repetition + draw(ids()), plain
    if kind == "padded":
        return f"  {plain} ", plain
    if kind == "escaped":
        e = enc.escape
        escapes = [
            (f"{e}F{e}", enc.field),
            (f"{e}S{e}", enc.component),
            (f"{e}T{e}", enc.subcomponent),
            (f"{e}R{e}", enc.repetition),
            (f"{e}E{e}", enc.escape),
            (f"{e}X414243{e}", "ABC"),
        ]
        tokens = draw(
            st.lists(
                st.one_of(st.sampled_from(escapes), ids().map(lambda s: (s, s))),
                min_size=1,
                max_size=6,
            )
        )
        return "".join(w for w, _ in tokens), "".join(r for _, r in tokens)
    return plain, plain


@st.composite
def message_types(draw: st.DrawFn, enc: Encoding) -> tuple[str, tuple[str, str]]:
    """(MSH-9 as written, (message code, trigger event) as a reader sees them)."""
    kind = draw(
        st.sampled_from(
            ["supported"] * 4 + ["structure", "lowercase", "unsupported", "random", "code", "empty"]
        )
    )
    c = enc.component
    if kind == "empty":
        return "", ("", "")
    if kind == "code":
        code = draw(st.sampled_from(["ORM", "ADT", "OMI", "ACK"]))
        return code, (code, "")
    if kind == "unsupported":
        pair = draw(st.sampled_from(UNSUPPORTED))
        return pair[0] + c + pair[1], pair
    if kind == "random":
        code = draw(st.text(ALNUM, min_size=1, max_size=4))
        event = draw(st.text(ALNUM, max_size=4))
        return code + c + event, (code.upper(), event.upper())
    code, event = draw(st.sampled_from(sorted(SUPPORTED)))
    if kind == "structure":
        return f"{code}{c}{event}{c}{code}_{event}", (code, event)
    if kind == "lowercase":
        return f"{code.lower()}{c}{event.lower()}", (code, event)
    return code + c + event, (code, event)


@st.composite
def versions(draw: st.DrawFn, enc: Encoding) -> tuple[str, bool]:
    """(MSH-12 as written, whether a receiver may accept it)."""
    valid = ["2.5.1", "2.3", "2.3.1", "2.4", "2.5", "2.6", f"2.5.1{enc.component}junk"]
    invalid = ["", "3.0", "1.0", "V2.5", "2,5", "x"]
    value = draw(st.sampled_from(valid * 2 + invalid))
    return value, value in valid


def _body(
    message_type: tuple[str, str], patient: str, accession: str, enc: Encoding
) -> list[list[str]]:
    c = enc.component
    pid = ["PID", "1", "", f"{patient}{c}{c}{c}HOSP{c}MR", "", f"Doe{c}Jane", "", "19600101", "F"]
    code, event = message_type
    if code in ("ORM", "OMI") or (code, event) not in SUPPORTED:
        obr = ["OBR", "1", "PL1", "FL1", f"CTHEAD{c}CT head{c}L", "", "", "20261128093000"]
        obr += [""] * (18 - len(obr)) + [accession]
        return [pid, ["ORC", "NW", "PL1", "FL1", "", "SC"], obr]
    if event == "A40":
        return [["EVN", event, "20261128093000"], pid, ["MRG", f"{patient}-OLD{c}{c}{c}HOSP{c}MR"]]
    return [["EVN", event, "20261128093000"], pid]


@dataclass(frozen=True)
class _BodyDamage:
    """What the hostile edits did, for the oracle."""

    touched: bool = False
    bad_segment_name: bool = False
    accession_intact: bool = True


@st.composite
def damaged_body(
    draw: st.DrawFn, body: list[list[str]], enc: Encoding
) -> tuple[list[list[str]], _BodyDamage]:
    segments = [list(s) for s in body]
    damage = _BodyDamage()
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["drop", "field", "field", "insert", "long"]))
        if op == "insert":
            name = draw(st.sampled_from(["ZFZ", "NTE", "ZDS", "MSH", *NOT_SEGMENT_NAMES]))
            fields = draw(st.lists(hostile_values(enc), max_size=5))
            segments.insert(draw(st.integers(0, len(segments))), [name, *fields])
            damage = replace(damage, touched=True)
            continue
        if not segments:
            continue
        index = draw(st.integers(0, len(segments) - 1))
        target = segments[index]
        if op == "drop":
            del segments[index]
        else:
            position = draw(st.integers(1, 25))
            if op == "long":
                value = "Y" * draw(st.integers(10_000, 200_000))
            else:
                value = draw(hostile_values(enc))
            target.extend([""] * (position + 1 - len(target)))
            target[position] = value
        # Any edit of OBR may move or drop OBR-18 (a value may hold the field separator).
        damage = replace(
            damage, touched=True, accession_intact=damage.accession_intact and target[0] != "OBR"
        )
    bad_name = any(segment[0] in NOT_SEGMENT_NAMES for segment in segments)
    return segments, replace(damage, bad_segment_name=bad_name)


@st.composite
def readable_messages(draw: st.DrawFn) -> Hl7Case:
    """A framed message whose MSH a reader can use; everything after MSH-2 may be hostile."""
    enc = draw(st.sampled_from(ENCODINGS))
    control_wire, control_id = draw(control_ids(enc))
    type_wire, message_type = draw(message_types(enc))
    version_wire, version_ok = draw(versions(enc))
    patient, accession = "FZ-" + draw(ids()), "FZ-" + draw(ids())
    msh_fields = ["RIS", "HOSP", "PACSFLOW", "RAD", "20261128093000", "", type_wire]
    msh_fields += [control_wire, "P", version_wire]
    msh_touched = False
    if draw(st.integers(0, 3)) == 0:  # junk in MSH-3..8 or MSH-11
        position = draw(st.sampled_from([3, 4, 5, 6, 7, 8, 11]))
        msh_fields[position - 3] = draw(hostile_values(enc, in_msh=True))
        msh_touched = True
    if draw(st.integers(0, 5)) == 0:  # a sender that stops after MSH-8 .. MSH-11
        last = draw(st.integers(8, 11))
        msh_fields = msh_fields[: last - 2]
        if last < 10:
            control_id = ""
        if last < 9:
            message_type = ("", "")
        version_ok = False
    segments, damage = draw(damaged_body(_body(message_type, patient, accession, enc), enc))
    terminator = draw(st.sampled_from(["\r", "\r", "\n", "\r\n"]))
    leading = draw(st.sampled_from(["", "", "", "\ufeff", "\r\n", "\x00"]))
    trailing = draw(st.sampled_from([terminator, ""]))

    def encoded(fields: list[str]) -> str:
        msh = "MSH" + enc.field + enc.msh2 + enc.field + enc.field.join(fields)
        lines = [msh] + [enc.field.join(s) for s in segments]
        return leading + terminator.join(lines) + trailing

    payload = encoded(msh_fields).encode("utf-8")
    if draw(st.booleans()) and len(msh_fields) == 10:  # MSH-18 "8859/1": Latin-1, if it can
        text = encoded([*msh_fields, "", "", "", "", "", "8859/1"])
        try:
            payload = text.encode("latin-1")
        except UnicodeEncodeError:
            pass
    code, event = message_type
    codes = ALL_CODES
    if not code or not control_id or not version_ok or (code, event) not in SUPPORTED:
        codes = NOT_ACCEPTED
    if damage.bad_segment_name or not code or not control_id:
        codes = frozenset({"AE"})  # body unparseable, or MSH-9 / MSH-10 missing (101)
    if not (damage.touched or msh_touched) and codes == ALL_CODES:
        codes = frozenset({"AA"})  # untouched and supported: must be accepted
    stored = accession if code in ("ORM", "OMI") and damage.accession_intact else None
    prefix = draw(st.sampled_from([b"", b"", b"\r\n"]))  # tolerated between frames
    return Hl7Case(
        label="readable MSH" + (" (untouched)" if codes == {"AA"} else ""),
        wire=prefix + START + payload + END,
        reply=Reply.ACK,
        control_id=control_id,
        codes=codes,
        accession=stored,
    )


_SIMPLE = (
    b"MSH|^~\\&|RIS|HOSP|PACSFLOW|RAD|20261128||ADT^A08|FRAMING1|P|2.5.1\r"
    b"EVN|A08\rPID|1||FZ-FRAMING^^^HOSP^MR\r"
)


def _not_msh(data: bytes) -> bool:
    return not any(
        data.decode(codec, errors="replace").lstrip(_LEADING).startswith("MSH")
        for codec in ("utf-8", "latin-1")
    )


@st.composite
def not_mllp(draw: st.DrawFn) -> Hl7Case:
    """Bytes that break MLLP, or a frame without any MSH: the listener must close."""
    kind = draw(st.sampled_from(NOT_MLLP_KINDS))
    cut = draw(st.integers(0, len(_SIMPLE)))
    if kind == "unframed":
        return Hl7Case(kind, _SIMPLE + END, Reply.CLOSE)
    if kind == "http":
        return Hl7Case(
            kind, b"POST /hl7 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", Reply.CLOSE
        )
    if kind == "tls":
        return Hl7Case(
            kind, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32), Reply.CLOSE
        )
    if kind == "binary":
        junk = draw(st.binary(min_size=1, max_size=300).filter(lambda b: b[0] not in b"\x0b\r\n"))
        return Hl7Case(kind, junk, Reply.CLOSE)
    if kind == "start inside":
        return Hl7Case(kind, START + _SIMPLE[:cut] + START + _SIMPLE + END, Reply.CLOSE)
    if kind == "never ends":
        return Hl7Case(kind, START + _SIMPLE[:cut], Reply.CLOSE, half_close=True)
    if kind == "bad end":
        end = draw(st.sampled_from([b"\x1c", b"\r\x1c", b"\x1c\n", b"\x1d\r", b""]))
        return Hl7Case(kind, START + _SIMPLE + end, Reply.CLOSE, half_close=True)
    junk = draw(
        st.one_of(
            st.binary(max_size=300),
            st.sampled_from(
                [b"", b"PID|1||X", b"msh|^~\\&|a|b", b"\r\n\r\n", b"\xef\xbb\xbfEVN|A08"]
            ),
        )
        .map(lambda b: b.replace(START, b"").replace(b"\x1c", b""))
        .filter(_not_msh)
    )
    return Hl7Case(kind, START + junk + END, Reply.CLOSE)


@st.composite
def broken_msh(draw: st.DrawFn) -> Hl7Case:
    """A frame that starts with MSH but whose delimiters no reader can use: MSH-10 is not
    readable, so an ACK (any) or a close are both correct."""
    start = draw(st.sampled_from(BROKEN_MSH_STARTS))
    rest = "RIS|HOSP|PACSFLOW|RAD|20261128||ADT^A08|BROKEN1|P|2.5.1\rPID|1||X"
    return Hl7Case(
        "unusable MSH-1/MSH-2", START + (start + rest).encode() + END, Reply.ACK_OR_CLOSE
    )


def hl7_cases() -> st.SearchStrategy[Hl7Case]:
    return st.one_of(
        readable_messages(),
        readable_messages(),
        readable_messages(),
        not_mllp(),
        broken_msh(),
    )
