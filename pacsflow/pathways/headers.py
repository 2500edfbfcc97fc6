"""Instance headers as a small typed record, from a pydicom dataset or DICOMweb JSON."""

from __future__ import annotations

from typing import Any

import pydicom
from pydantic import BaseModel

# DICOM JSON model (PS3.18 F.2) tags of the attributes pathways look at.
_TAGS: dict[str, str] = {
    "StudyInstanceUID": "0020000D",
    "SeriesInstanceUID": "0020000E",
    "SOPInstanceUID": "00080018",
    "SOPClassUID": "00080016",
    "Modality": "00080060",
    "ImageType": "00080008",
    "SeriesDescription": "0008103E",
    "StudyDescription": "00081030",
    "ConvolutionKernel": "00181210",
    "SliceThickness": "00180050",
    "ImageOrientationPatient": "00200037",
    "ImagePositionPatient": "00200032",
    "PixelSpacing": "00280030",
    "Rows": "00280010",
    "Columns": "00280011",
    "ContrastBolusAgent": "00180010",
    "BodyPartExamined": "00180015",
    "Manufacturer": "00080070",
    "ManufacturerModelName": "00081090",
    "KVP": "00180060",
    "PatientID": "00100020",
    "AccessionNumber": "00080050",
    "StudyDate": "00080020",
    "SeriesNumber": "00200011",
    "InstanceNumber": "00200013",
}


class InstanceHeader(BaseModel):
    """What the pathways need from one instance's header (no patient names)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str = ""
    modality: str = ""
    image_type: list[str] = []
    series_description: str = ""
    study_description: str = ""
    kernel: str = ""
    slice_thickness: float | None = None
    orientation: list[float] | None = None
    position: list[float] | None = None
    pixel_spacing: list[float] | None = None
    rows: int | None = None
    columns: int | None = None
    contrast_agent: str = ""
    body_part: str = ""
    manufacturer: str = ""
    model_name: str = ""
    kvp: float | None = None
    patient_id: str = ""
    accession_number: str = ""
    study_date: str = ""
    series_number: int | None = None

    @classmethod
    def from_values(cls, get: Any) -> InstanceHeader:
        def text(keyword: str) -> str:
            value = get(keyword)
            if isinstance(value, list):
                return "\\".join(str(v) for v in value)
            return "" if value is None else str(value)

        def number(keyword: str) -> float | None:
            value = get(keyword)
            if isinstance(value, list):
                value = value[0] if value else None
            try:
                return None if value in (None, "") else float(value)
            except (TypeError, ValueError):
                return None

        def numbers(keyword: str) -> list[float] | None:
            value = get(keyword)
            if value is None:
                return None
            values = value if isinstance(value, list) else [value]
            try:
                return [float(v) for v in values]
            except (TypeError, ValueError):
                return None

        image_type = get("ImageType")
        if isinstance(image_type, str):
            image_type = image_type.split("\\")
        rows, cols, series_no = number("Rows"), number("Columns"), number("SeriesNumber")
        return cls(
            study_uid=text("StudyInstanceUID"),
            series_uid=text("SeriesInstanceUID"),
            sop_uid=text("SOPInstanceUID"),
            sop_class_uid=text("SOPClassUID"),
            modality=text("Modality"),
            image_type=[str(v).upper() for v in (image_type or [])],
            series_description=text("SeriesDescription"),
            study_description=text("StudyDescription"),
            kernel=text("ConvolutionKernel"),
            slice_thickness=number("SliceThickness"),
            orientation=numbers("ImageOrientationPatient"),
            position=numbers("ImagePositionPatient"),
            pixel_spacing=numbers("PixelSpacing"),
            rows=int(rows) if rows is not None else None,
            columns=int(cols) if cols is not None else None,
            contrast_agent=text("ContrastBolusAgent"),
            body_part=text("BodyPartExamined").upper(),
            manufacturer=text("Manufacturer"),
            model_name=text("ManufacturerModelName"),
            kvp=number("KVP"),
            patient_id=text("PatientID"),
            accession_number=text("AccessionNumber"),
            study_date=text("StudyDate"),
            series_number=int(series_no) if series_no is not None else None,
        )

    @classmethod
    def from_dataset(cls, ds: pydicom.Dataset) -> InstanceHeader:
        def get(keyword: str) -> Any:
            value = ds.get(keyword)
            if value is None:
                return None
            if isinstance(value, pydicom.multival.MultiValue):
                return [str(v) for v in value]
            return str(value)

        return cls.from_values(get)

    @classmethod
    def from_dicom_json(cls, item: dict[str, Any]) -> InstanceHeader:
        def get(keyword: str) -> Any:
            element = item.get(_TAGS[keyword])
            if not element or "Value" not in element:
                return None
            values = element["Value"]
            if element.get("vr") == "PN":
                values = [v.get("Alphabetic", "") for v in values]
            return values if len(values) > 1 or keyword in _MULTI else values[0]

        return cls.from_values(get)

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def is_axial(self) -> bool:
        if not self.orientation or len(self.orientation) != 6:
            return False
        row, col = self.orientation[:3], self.orientation[3:]
        normal_z = row[0] * col[1] - row[1] * col[0]
        return abs(normal_z) > 0.95


_MULTI = {"ImageType", "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"}
