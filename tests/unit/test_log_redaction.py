"""Values quoted by pydicom never reach a log line; refusals name attributes, not values."""

from __future__ import annotations

import logging
import warnings

import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag

from pacsflow.dicom.log_redaction import WITHHELD, redact_pydicom_logs, redact_quoted
from pacsflow.gateway.dicom_scp import _unconvertible


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Invalid value for VR IS: '19410203x'.", f"Invalid value for VR IS: {WITHHELD}."),
        ('Invalid value for VR PN: "O\'Brien^Zebedee"', f"Invalid value for VR PN: {WITHHELD}"),
        (r"VR DA: 'a\'b' and 'c'", f"VR DA: {WITHHELD} and {WITHHELD}"),
        (
            "Expected explicit VR, but found implicit VR",
            "Expected explicit VR, but found implicit VR",
        ),
    ],
)
def test_quoted_values_are_withheld(message: str, expected: str) -> None:
    assert redact_quoted(message) == expected


def test_pydicom_logger_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    redact_pydicom_logs()
    redact_pydicom_logs()  # idempotent
    assert len(logging.getLogger("pydicom").filters) == len(
        set(logging.getLogger("pydicom").filters)
    )
    caplog.set_level(logging.WARNING, logger="pydicom")
    ds = Dataset()
    raw = b"19410203x "
    ds[0x00200013] = RawDataElement(BaseTag(0x00200013), "IS", len(raw), raw, 0, False, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _ = ds.InstanceNumber  # pydicom validates (and logs) on conversion
    lines = [r.getMessage() for r in caplog.records if r.name == "pydicom"]
    assert lines, "pydicom logged nothing: the test no longer exercises the filter"
    assert all("19410203" not in line for line in lines), lines
    assert any(WITHHELD in line for line in lines)


def test_refusal_names_the_attribute_not_its_value() -> None:
    ds = Dataset()
    ds.PatientID = "PAT-1"
    ds[0x00101030] = RawDataElement(BaseTag(0x00101030), "DS", 8, b"Zebedee ", 0, False, True)
    assert _unconvertible(ds) == "PatientWeight (0010,1030)"
