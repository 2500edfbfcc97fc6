"""Malformed DICOM objects for the gateway's C-STORE SCP, each with what its status may be.

Each object starts as a valid tiny CT (pacsflow.testing.dicom_factory) encoded in Explicit
VR Little Endian, then is damaged at the byte or element level: flipped bytes, cuts, wrong
or impossible VRs, lengths past the end, undefined lengths, dropped or invalid UIDs, pixel
data shorter than Rows x Columns says, odd geometry, junk in text values, unknown character
sets, stray sequences and private tags, a transfer syntax that does not match the bytes, a
SOP class or instance that does not match the request, random bytes. The file meta (what
the C-STORE request and the presentation context are built from) stays well-formed, so the
association itself is always valid DICOM and must never be dropped.

Statuses (PS3.4 Table B.2-1, PS3.7 C.4.2): 0x0000 success; failures 0x0110 processing
failure, 0x0122 SOP class not supported, 0x0124 not authorized, 0x0211/0x0212 unrecognised
or mistyped operation, A7xx out of resources, A9xx data set does not match SOP class, Cxxx
cannot understand; warnings B000, B006, B007.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from io import BytesIO

from hypothesis import strategies as st
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    RTImageStorage,
)

from pacsflow.testing.dicom_factory import tiny_ct

from .live import fuzz_uid

SUCCESS = 0x0000
REFUSED_SOP_CLASS = 0x0122
DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
_FAILURE_CODES = frozenset({0x0110, 0x0122, 0x0124, 0x0211, 0x0212})
_WARNING_CODES = frozenset({0xB000, 0xB006, 0xB007})
TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
# Explicit VR encodings with a 4-byte length (PS3.5 Table 7.1-1).
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
VRS = [
    vr.encode()
    for vr in (
        "AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL"
        " UN UR US UT UV"
    ).split()
]

TAG_SOP_CLASS = 0x00080016
TAG_SOP_INSTANCE = 0x00080018
TAG_STUDY = 0x0020000D
TAG_SERIES = 0x0020000E
TAG_PIXEL_DATA = 0x7FE00010
UID_TAGS = (TAG_SOP_INSTANCE, TAG_STUDY, TAG_SERIES)


def is_protocol_status(status: int) -> bool:
    """Success, a warning or a failure status a C-STORE SCP may answer with."""
    return (
        status == SUCCESS
        or status in _FAILURE_CODES
        or status in _WARNING_CODES
        or status >> 8 in (0xA7, 0xA9)
        or status >> 12 == 0xC
    )


@dataclass
class Element:
    """One top-level data element of an Explicit VR Little Endian body."""

    tag: int
    vr: bytes
    value: bytes
    declared_length: int | None = None  # a lie about the value's length
    header_vr: bytes | None = None  # VR bytes written while keeping the original layout

    def encode(self) -> bytes:
        group, element = self.tag >> 16, self.tag & 0xFFFF
        length = len(self.value) if self.declared_length is None else self.declared_length
        layout_vr = self.vr
        written_vr = self.header_vr if self.header_vr is not None else self.vr
        head = struct.pack("<HH", group, element) + written_vr
        if layout_vr in LONG_VRS:
            head += b"\x00\x00" + struct.pack("<I", length & 0xFFFFFFFF)
        else:
            head += struct.pack("<H", length & 0xFFFF)
        return head + self.value


def parse_body(body: bytes) -> list[Element]:
    """Top-level elements of a defined-length Explicit VR LE body (no sequences)."""
    elements, pos = [], 0
    while pos < len(body):
        group, element = struct.unpack_from("<HH", body, pos)
        vr = body[pos + 4 : pos + 6]
        if vr in LONG_VRS:
            (length,), start = struct.unpack_from("<I", body, pos + 8), pos + 12
        else:
            (length,), start = struct.unpack_from("<H", body, pos + 6), pos + 8
        elements.append(Element((group << 16) | element, vr, body[start : start + length]))
        pos = start + length
    return elements


def encode_body(elements: list[Element]) -> bytes:
    return b"".join(e.encode() for e in elements)


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, DICM prefix and a well-formed file meta group (PS3.10 7.1)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    fp = DicomBytesIO()
    write_file_meta_info(fp, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + fp.getvalue()


def valid_body(study_uid: str, serial: int) -> bytes:
    """The dataset of a valid 8x8 CT slice, Explicit VR Little Endian, without file meta."""
    ds = tiny_ct(study_uid=study_uid, series_uid=fuzz_uid(7, serial), index=0, rows=8)
    ds.SOPInstanceUID = fuzz_uid(8, serial)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    (group_length,) = struct.unpack_from("<I", data, 132 + 8)
    return data[132 + 12 + group_length :]


@dataclass
class DicomCase:
    label: str
    body: bytes
    sop_instance_uid: str  # as the C-STORE request says (file meta)
    sop_class_uid: str = CTImageStorage
    transfer_syntax: str = ExplicitVRLittleEndian
    expected: frozenset[int] | None = None  # None: any protocol status
    must_fail: bool = False
    notes: list[str] = field(default_factory=list)

    def file_bytes(self) -> bytes:
        return (
            file_meta(self.sop_class_uid, self.sop_instance_uid, self.transfer_syntax) + self.body
        )

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 160 else self.body[:160] + b"..."
        expected = "any" if self.expected is None else [f"0x{s:04X}" for s in sorted(self.expected)]
        return (
            f"DicomCase({self.label!r}, {'; '.join(self.notes)}, ts={self.transfer_syntax.name}, "
            f"class={self.sop_class_uid}, expected={expected}, fail={self.must_fail}, {body!r})"
        )


def valid_case(study_uid: str, serial: int) -> DicomCase:
    """The undamaged object (its SOP Instance UID from `serial`)."""
    return DicomCase("valid", valid_body(study_uid, serial), fuzz_uid(8, serial))


def with_element_value(case: DicomCase, tag: int, value: bytes, label: str) -> DicomCase:
    """The case with one element's value bytes replaced (its length follows the bytes)."""
    elements = parse_body(case.body)
    elements[_index_of(elements, tag)].value = value
    return DicomCase(label, encode_body(elements), case.sop_instance_uid)


def _index_of(elements: list[Element], tag: int) -> int:
    return next(i for i, e in enumerate(elements) if e.tag == tag)


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


@st.composite
def dicom_cases(draw: st.DrawFn, study_uid: str, serial: int) -> DicomCase:
    """One malformed object; `serial` makes its SOP Instance UID unique."""
    body = valid_body(study_uid, serial)
    sop_uid = fuzz_uid(8, serial)
    case = DicomCase("", body, sop_uid)
    elements = parse_body(body)
    kind = draw(
        st.sampled_from(
            [
                "flip",
                "flip",
                "cut",
                "wrong vr",
                "vr bytes",
                "length",
                "drop",
                "bad uid",
                "pixels",
                "geometry",
                "text junk",
                "charset",
                "stray elements",
                "transfer syntax",
                "sop mismatch",
                "random body",
            ]
        )
    )
    case.label = kind
    if kind == "flip":
        for _ in range(draw(st.integers(1, 6))):
            position = draw(st.integers(0, len(body) - 1))
            xor = draw(st.integers(1, 255))
            case.notes.append(f"byte {position} ^= 0x{xor:02x}")
            body = body[:position] + bytes([body[position] ^ xor]) + body[position + 1 :]
        case.body = body
        return case
    if kind == "cut":
        position = draw(st.integers(0, len(body) - 1))
        case.notes.append(f"cut at {position} of {len(body)}")
        case.body = body[:position]
        return case
    if kind == "random body":
        case.body = draw(st.binary(max_size=2_000))
        case.must_fail = True  # it cannot hold the request's SOP Instance UID
        return case
    if kind == "transfer syntax":
        case.transfer_syntax = draw(st.sampled_from(TRANSFER_SYNTAXES[1:]))
        return case
    if kind == "sop mismatch":
        which = draw(st.sampled_from(["refused class", "other class", "other instance"]))
        case.notes.append(which)
        if which == "refused class":  # negotiated, but not a class the gateway stores
            case.sop_class_uid, case.expected = RTImageStorage, frozenset({REFUSED_SOP_CLASS})
        elif which == "other class":
            case.sop_class_uid, case.expected = MRImageStorage, frozenset({DOES_NOT_MATCH})
        else:
            case.sop_instance_uid = fuzz_uid(9, serial)
            case.expected = frozenset({DOES_NOT_MATCH})
        return case

    index = draw(st.integers(0, len(elements) - 1))
    target = elements[index]
    case.notes.append(f"element ({target.tag >> 16:04X},{target.tag & 0xFFFF:04X}) {target.vr!r}")
    if kind == "wrong vr":
        target.vr = draw(st.sampled_from([*VRS, b"ZZ", b"\x00\x00", b"un"]))
        case.notes.append(f"VR -> {target.vr!r}")
    elif kind == "vr bytes":  # the header layout of the old VR with another VR's name
        target.header_vr = draw(st.sampled_from([*VRS, b"\xff\xfe"]))
        case.notes.append(f"VR bytes -> {target.header_vr!r}")
    elif kind == "length":
        target.declared_length = draw(
            st.sampled_from([0xFFFFFFFF, 0xFFFFFFF0, 0xFFFF, len(target.value) + 1])
            | st.integers(0, 0xFFFF)
        )
        case.notes.append(f"declared length {target.declared_length}")
    elif kind == "drop":
        tag = draw(st.sampled_from([TAG_SOP_CLASS, *UID_TAGS, target.tag]))
        del elements[_index_of(elements, tag)]
        case.notes.append(f"dropped ({tag >> 16:04X},{tag & 0xFFFF:04X})")
        if tag in UID_TAGS:
            case.expected = frozenset({CANNOT_UNDERSTAND})
        elif tag == TAG_SOP_CLASS:
            case.expected = frozenset({DOES_NOT_MATCH})
    elif kind == "bad uid":
        tag = draw(st.sampled_from([TAG_SOP_CLASS, *UID_TAGS]))
        value = draw(
            st.sampled_from([b"", b"abc", b"1..2", b".1.2", b"1.2.", b"1.2.3a", b"1" * 70])
            | st.binary(max_size=64).filter(
                lambda b: not b.rstrip(b"\x00 ").replace(b".", b"").isdigit()
            )
        )
        elements[_index_of(elements, tag)].value = value
        case.notes.append(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) = {value!r}")
        case.expected = frozenset({DOES_NOT_MATCH if tag == TAG_SOP_CLASS else CANNOT_UNDERSTAND})
    elif kind == "pixels":
        pixels = elements[_index_of(elements, TAG_PIXEL_DATA)]
        size = draw(st.integers(0, 2 * len(pixels.value) + 3))
        pixels.value = (pixels.value * 3)[:size]
        case.notes.append(f"{size} pixel bytes of 128")
        if size < 128:  # 8 x 8 x 16 bits
            case.expected = frozenset({CANNOT_UNDERSTAND})
    elif kind == "geometry":
        keyword = draw(
            st.sampled_from(
                ["Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "NumberOfFrames"]
            )
        )
        tags = {
            "Rows": 0x00280010,
            "Columns": 0x00280011,
            "BitsAllocated": 0x00280100,
            "SamplesPerPixel": 0x00280002,
        }
        if keyword == "NumberOfFrames":
            value = draw(
                st.sampled_from([b"abc ", b"-1", b"0 ", b"99999999999", b"", b"1\\2 ", b"2 "])
            )
            elements.append(Element(0x00280008, b"IS", value))
            elements.sort(key=lambda e: e.tag)
        else:
            value = _us(draw(st.sampled_from([0, 1, 3, 7, 255, 65535])))
            elements[_index_of(elements, tags[keyword])].value = value
        case.notes.append(f"{keyword} = {value!r}")
    elif kind == "text junk":
        junk = draw(
            st.binary(max_size=80)
            | st.integers(1_000, 60_000).map(lambda n: b"\\" * n)
            | st.sampled_from([b"\x00", b"\\\\\\", b"1e999", b"nan", b"-0", b"\xc3\x28", b"\x1b$B"])
        )
        target.value = junk
        case.notes.append(f"value = {junk[:40]!r} ({len(junk)} bytes)")
    elif kind == "charset":
        charset = draw(
            st.sampled_from([b"ISO_IR 192", b"GB18030", b"ISO 2022 IR 87", b"XYZ", b"\\\\", b""])
        )
        elements.append(Element(0x00080005, b"CS", charset))
        name = elements[_index_of(elements, 0x00100010)]
        name.value = draw(st.binary(min_size=1, max_size=64))
        elements.sort(key=lambda e: e.tag)
        case.notes.append(f"charset {charset!r}, name {name.value!r}")
    elif kind == "stray elements":
        stray = draw(st.sampled_from(["private", "sequence", "out of order", "duplicate"]))
        case.notes.append(stray)
        if stray == "private":
            elements += [
                Element(0x00090010, b"LO", b"JUNK CREATOR"),
                Element(0x00091001, b"UN", draw(st.binary(max_size=200))),
            ]
            elements.sort(key=lambda e: e.tag)
        elif stray == "sequence":  # undefined-length SQ holding an item of junk
            item = draw(st.binary(max_size=120))
            value = b"\xfe\xff\x00\xe0" + struct.pack("<I", len(item)) + item
            value += draw(st.sampled_from([b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", b""]))
            elements.insert(index, Element(0x00081140, b"SQ", value, declared_length=0xFFFFFFFF))
        elif stray == "out of order":
            other = draw(st.integers(0, len(elements) - 1))
            elements[index], elements[other] = elements[other], elements[index]
        else:
            elements.append(Element(target.tag, target.vr, target.value))
    case.body = encode_body(elements)
    return case
