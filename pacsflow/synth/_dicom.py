"""DICOM writing for synthetic studies: CT image series, localizers, dose screens, MR, CR.

Every file is a Part 10 file in Explicit VR Little Endian. One dataset per series is built
once and only the per-image attributes change between files, which keeps a 36-slice
series to a few milliseconds per file.
"""

from __future__ import annotations

import itertools
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from pacsflow.synth.grid import Grid
from pacsflow.synth.truth import SeriesTruth
from pacsflow.synth.vendors import VendorProfile

# SOP classes (PS3.4 B.5).
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


# Namespace of the name-based UUIDs behind synthetic UIDs.
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/pacsflow/pacsflow/synth")


def uid(*parts: object) -> str:
    """A deterministic UID from the parts given: 2.25.<name-based UUID> (PS3.5 B.2).

    Not pydicom's generate_uid(prefix=None, entropy_srcs=...): with prefix None it ignores
    the entropy sources and returns a random UUID (pydicom 3.0).
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '|'.join(map(str, parts))).int}"


def ds_number(v: float) -> str:
    """Decimal String of at most 16 characters (PS3.5 6.2, DS), exact where it fits."""
    v = float(v)
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    s = repr(v)
    if len(s) <= 16 and "e" not in s:
        return s
    for digits in range(12, 4, -1):
        s = f"{v:.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{v:.6e}"


@dataclass(frozen=True)
class StudyContext:
    """What every series of a study shares (patient, study, equipment)."""

    study_uid: str
    accession_number: str
    study_id: str
    patient_id: str
    patient_name: str
    patient_birth_date: date
    patient_sex: str
    study_date: date
    study_time: str  # HHMMSS
    study_description: str
    vendor: VendorProfile
    model_name: str
    station_name: str
    device_serial: str
    institution: str
    body_part: str | None
    frame_of_reference_uid: str
    modality: str = "CT"
    patient_position: str = "HFS"
    contrast_agent: str | None = None
    kvp: float = 120.0
    ctdi_vol: float = 50.0
    seed: int = 0
    uid_parts: tuple[str, ...] = field(default_factory=tuple)

    @property
    def patient_age(self) -> str:
        years = (self.study_date - self.patient_birth_date).days // 365
        return f"{max(years, 0):03d}Y"

    def time_at(self, seconds: float) -> str:
        t = datetime.combine(self.study_date, datetime.strptime(self.study_time, "%H%M%S").time())
        return (t + timedelta(seconds=seconds)).strftime("%H%M%S.%f")[:13]


def _base(
    ctx: StudyContext,
    sop_class: str,
    modality: str,
    series_uid: str,
    series_number: int,
    description: str,
    seconds: float,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "PACSFLOW_SYNTH"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.StudyDate = ctx.study_date.strftime("%Y%m%d")
    ds.SeriesDate = ds.StudyDate
    ds.AcquisitionDate = ds.StudyDate
    ds.ContentDate = ds.StudyDate
    ds.StudyTime = ctx.study_time
    ds.SeriesTime = ctx.time_at(seconds)
    ds.AcquisitionTime = ds.SeriesTime
    ds.ContentTime = ds.SeriesTime
    ds.AccessionNumber = ctx.accession_number
    ds.Modality = modality
    ds.Manufacturer = ctx.vendor.manufacturer
    ds.InstitutionName = ctx.institution
    ds.ReferringPhysicianName = "REFERRER^SYNTHETIC"
    ds.StationName = ctx.station_name
    ds.StudyDescription = ctx.study_description
    ds.SeriesDescription = description
    ds.ManufacturerModelName = ctx.model_name
    ds.PatientName = ctx.patient_name
    ds.PatientID = ctx.patient_id
    ds.PatientBirthDate = ctx.patient_birth_date.strftime("%Y%m%d")
    ds.PatientSex = ctx.patient_sex
    ds.PatientAge = ctx.patient_age
    if ctx.body_part:
        ds.BodyPartExamined = ctx.body_part
    ds.DeviceSerialNumber = ctx.device_serial
    ds.SoftwareVersions = ctx.vendor.software_versions
    ds.ProtocolName = ctx.study_description
    ds.StudyInstanceUID = ctx.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ctx.study_id
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.BurnedInAnnotation = "NO"
    return ds


def _ct_acquisition(ds: Dataset, ctx: StudyContext, kernel: str, fov_mm: float) -> None:
    ds.KVP = ds_number(ctx.kvp)
    ds.DataCollectionDiameter = ds_number(500.0)
    ds.ReconstructionDiameter = ds_number(fov_mm)
    ds.DistanceSourceToDetector = ds_number(1085.6)
    ds.DistanceSourceToPatient = ds_number(541.0)
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = ds_number(150.0)
    ds.RotationDirection = "CW"
    ds.ExposureTime = 1000
    ds.XRayTubeCurrent = 300
    ds.Exposure = 300
    ds.FilterType = "BODY FILTER" if ctx.body_part != "HEAD" else "HEAD FILTER"
    ds.GeneratorPower = 36
    ds.FocalSpots = ds_number(0.7)
    ds.ConvolutionKernel = kernel
    ds.PatientPosition = ctx.patient_position
    ds.add_new(0x00189345, "FD", ctx.ctdi_vol)  # CTDIvol
    if ctx.contrast_agent:
        ds.ContrastBolusAgent = ctx.contrast_agent
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = ds_number(80.0)
        ds.ContrastBolusIngredient = "IODINE"
        ds.ContrastBolusIngredientConcentration = ds_number(350.0)


def _outside_circle(ny: int, nx: int, px: float, fov_mm: float) -> np.ndarray:
    """Pixels outside the reconstruction circle (diameter = reconstruction FOV)."""
    yy = (np.arange(ny) - (ny - 1) / 2.0) * px
    xx = (np.arange(nx) - (nx - 1) / 2.0) * px
    return (yy[:, None] ** 2 + xx[None, :] ** 2) > (fov_mm / 2.0) ** 2


def _stored_pixels(
    hu: np.ndarray, vendor: VendorProfile, outside: np.ndarray | None = None
) -> np.ndarray:
    """HU (int16, already within -1024..3071) -> stored values in the vendor's
    representation (PS3.3 C.11.1.1.2: HU = stored * slope + intercept)."""
    dtype = np.uint16 if vendor.pixel_representation == 0 else np.int16
    stored = (hu - np.int16(vendor.rescale_intercept)).astype(dtype)
    if outside is not None:
        pad = vendor.padding_value
        stored[outside] = pad if pad is not None else int(-1024 - vendor.rescale_intercept)
    return stored


def _pixel_module(ds: Dataset, rows: int, cols: int, vendor: VendorProfile) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = vendor.bits_stored
    ds.HighBit = vendor.bits_stored - 1
    ds.PixelRepresentation = vendor.pixel_representation
    ds.RescaleIntercept = ds_number(vendor.rescale_intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"


# Attributes that change from file to file; everything else is encoded once per series.
_SOP_INSTANCE_UID = (0x0008, 0x0018)
_INSTANCE_NUMBER = (0x0020, 0x0013)
_IMAGE_POSITION = (0x0020, 0x0032)
_SLICE_LOCATION = (0x0020, 0x1041)
_PIXEL_DATA = (0x7FE0, 0x0010)
_VARIABLE = (_SOP_INSTANCE_UID, _INSTANCE_NUMBER, _IMAGE_POSITION, _SLICE_LOCATION, _PIXEL_DATA)
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UR", b"UT", b"UN"}


def _element(tag: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    """One Explicit VR Little Endian data element (PS3.5 7.1.2)."""
    if len(value) % 2:
        value += b"\0" if vr in (b"UI", b"OB") else b" "
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", tag[0], tag[1], vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag[0], tag[1], vr, len(value)) + value


def _encode(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


class _SeriesFileWriter:
    """Writes the files of one series: the shared part of the header is encoded once.

    Equivalent to setting the per-file attributes on `ds` and calling dcmwrite for each
    file, about ten times faster (the chest CT's 560 files are most of its write time).
    """

    def __init__(self, ds: Dataset) -> None:
        meta = ds.file_meta
        self._meta_fixed = (
            _element((0x0002, 0x0001), b"OB", b"\x00\x01"),
            _element((0x0002, 0x0002), b"UI", str(meta.MediaStorageSOPClassUID).encode()),
            _element((0x0002, 0x0010), b"UI", str(meta.TransferSyntaxUID).encode()),
            _element((0x0002, 0x0012), b"UI", str(meta.ImplementationClassUID).encode()),
            _element((0x0002, 0x0013), b"SH", str(meta.ImplementationVersionName).encode()),
        )
        bounds = [(0x0000, 0x0000), *_VARIABLE, (0xFFFF, 0xFFFF)]
        self._segments: list[bytes] = []
        for lo, hi in itertools.pairwise(bounds):
            part = Dataset()
            for elem in ds:
                t = (elem.tag.group, elem.tag.element)
                if lo < t < hi:
                    part.add(elem)
            self._segments.append(_encode(part) if len(part) else b"")
        self._pixel_vr = b"OB" if ds.get("BitsAllocated", 16) <= 8 else b"OW"

    def write(
        self,
        path: Path,
        sop_uid: str,
        number: int,
        pixels: bytes,
        position: Sequence[str] | None = None,
        slice_location: str | None = None,
    ) -> None:
        uid_b = sop_uid.encode()
        m = self._meta_fixed
        meta_body = b"".join((m[0], m[1], _element((0x0002, 0x0003), b"UI", uid_b), *m[2:]))
        variable = [
            _element(_SOP_INSTANCE_UID, b"UI", uid_b),
            _element(_INSTANCE_NUMBER, b"IS", str(number).encode()),
            _element(_IMAGE_POSITION, b"DS", "\\".join(position).encode()) if position else b"",
            _element(_SLICE_LOCATION, b"DS", slice_location.encode()) if slice_location else b"",
            _element(_PIXEL_DATA, self._pixel_vr, pixels),
        ]
        seg = self._segments
        parts = [
            b"\x00" * 128,
            b"DICM",
            struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(meta_body)),
            meta_body,
            seg[0],
        ]
        for v, sgm in zip(variable, seg[1:], strict=True):
            parts += [v, sgm]
        path.write_bytes(b"".join(parts))


def _write_all(
    ds: Dataset, folder: Path, frames: Sequence[tuple[int, str, dict[str, object], bytes]]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    writer = _SeriesFileWriter(ds)
    for number, sop_uid, attrs, pixels in frames:
        writer.write(
            folder / f"{number:04d}.dcm",
            sop_uid,
            number,
            pixels,
            attrs.get("ImagePositionPatient"),  # type: ignore[arg-type]
            attrs.get("SliceLocation"),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class AxialSeries:
    """An axial CT reconstruction to write."""

    series_number: int
    role: str
    description: str
    kernel: str
    hu: np.ndarray  # int16 (z, y, x)
    grid: Grid
    slice_thickness_mm: float
    window_center: list[float]
    window_width: list[float]
    window_explanation: list[str]
    noise_sd_hu: float | None
    is_reference: bool = False
    seconds_after_start: float = 30.0


def write_axial_series(study_dir: Path, ctx: StudyContext, s: AxialSeries) -> SeriesTruth:
    series_uid = uid(*ctx.uid_parts, "series", s.series_number)
    grid = s.grid
    fov = grid.spacing_zyx_mm[2] * grid.nx
    ds = _base(
        ctx,
        CT_IMAGE_STORAGE,
        "CT",
        series_uid,
        s.series_number,
        s.description,
        s.seconds_after_start,
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    _ct_acquisition(ds, ctx, s.kernel, fov)
    ds.SliceThickness = ds_number(s.slice_thickness_mm)
    ds.SpacingBetweenSlices = ds_number(grid.spacing_zyx_mm[0])
    ds.PixelSpacing = [ds_number(v) for v in grid.pixel_spacing_mm]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.WindowCenter = [ds_number(v) for v in s.window_center]
    ds.WindowWidth = [ds_number(v) for v in s.window_width]
    ds.WindowCenterWidthExplanation = s.window_explanation
    _pixel_module(ds, grid.ny, grid.nx, ctx.vendor)
    pad = ctx.vendor.padding_value
    if pad is not None:
        ds.add_new(0x00280120, "SS" if ctx.vendor.pixel_representation else "US", pad)
    x0, y0, _ = grid.origin_lps_mm
    xs, ys = ds_number(x0), ds_number(y0)
    reverse = ctx.vendor.reverse_instance_order
    outside = _outside_circle(grid.ny, grid.nx, grid.spacing_zyx_mm[2], fov)
    folder = study_dir / f"{s.series_number:03d}_{s.role}"
    frames = []
    for k in range(grid.nz):
        number = grid.nz - k if reverse else k + 1
        z = grid.slice_position(k)[2]
        attrs: dict[str, object] = {
            "ImagePositionPatient": [xs, ys, ds_number(z)],
            "SliceLocation": ds_number(z),
        }
        stored = _stored_pixels(s.hu[k], ctx.vendor, outside)
        frames.append(
            (number, uid(*ctx.uid_parts, "sop", s.series_number, number), attrs, stored.tobytes())
        )
    _write_all(ds, folder, frames)
    return SeriesTruth(
        series_uid=series_uid,
        series_number=s.series_number,
        description=s.description,
        role=s.role,  # type: ignore[arg-type]
        modality="CT",
        sop_class_uid=CT_IMAGE_STORAGE,
        n_instances=grid.nz,
        directory=folder.name,
        kernel=s.kernel,
        image_type=list(ds.ImageType),
        slice_thickness_mm=s.slice_thickness_mm,
        spacing_between_slices_mm=grid.spacing_zyx_mm[0],
        rows=grid.ny,
        columns=grid.nx,
        noise_sd_hu=None if s.noise_sd_hu is None else round(s.noise_sd_hu, 3),
        reversed_instance_order=reverse,
        is_reference=s.is_reference,
    )


def write_localizer(
    study_dir: Path,
    ctx: StudyContext,
    raw: np.ndarray,
    grid: Grid,
    *,
    lateral: bool,
    series_number: int = 1,
) -> SeriesTruth:
    """A projection radiograph through the noise-free volume, as CT localizer (scout)."""
    series_uid = uid(*ctx.uid_parts, "series", series_number)
    dz, dy, dx = grid.spacing_zyx_mm
    x0, y0, z0 = grid.origin_lps_mm
    # Attenuation relative to water, (HU + 1000) / 1000, summed along the ray (HU >= -1000).
    if lateral:  # through the patient from side to side: rows along -z, columns along +y
        proj = (raw.sum(axis=2, dtype=np.float64) + 1000.0 * grid.nx) * (dx / 1000.0)
        col_spacing, orientation = dy, ["0", "1", "0", "0", "0", "-1"]
    else:  # antero-posterior: columns along +x
        proj = (raw.sum(axis=1, dtype=np.float64) + 1000.0 * grid.ny) * (dy / 1000.0)
        col_spacing, orientation = dx, ["1", "0", "0", "0", "0", "-1"]
    z_top = z0 + (grid.nz - 1) * dz
    n_rows = max(2, round((grid.nz - 1) * dz / col_spacing) + 1)
    f = (z_top - np.arange(n_rows) * col_spacing - z0) / dz
    i0 = np.clip(np.floor(f).astype(int), 0, grid.nz - 1)
    i1 = np.clip(i0 + 1, 0, grid.nz - 1)
    w = (f - i0)[:, None]
    img = proj[i0] * (1.0 - w) + proj[i1] * w
    peak = float(img.max()) or 1.0
    hu = np.rint(img * (3000.0 / peak) - 1024.0).astype(np.int16)
    ds = _base(ctx, CT_IMAGE_STORAGE, "CT", series_uid, series_number, ctx.vendor.scout, 0.0)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    _ct_acquisition(
        ds,
        ctx,
        ctx.vendor.kernel("head" if lateral else "chest", "axial"),
        col_spacing * img.shape[1],
    )
    ds.SliceThickness = ds_number(0.6)
    ds.PixelSpacing = [ds_number(col_spacing), ds_number(col_spacing)]
    ds.ImageOrientationPatient = orientation
    position = (
        [x0 + (grid.nx - 1) * dx / 2.0, y0, z_top]
        if lateral
        else [x0, y0 + (grid.ny - 1) * dy / 2.0, z_top]
    )
    ds.WindowCenter = ds_number(float(np.percentile(hu, 60)))
    ds.WindowWidth = ds_number(2500.0)
    _pixel_module(ds, img.shape[0], img.shape[1], ctx.vendor)
    stored = _stored_pixels(hu, ctx.vendor)
    folder = study_dir / f"{series_number:03d}_scout"
    attrs: dict[str, object] = {"ImagePositionPatient": [ds_number(v) for v in position]}
    _write_all(
        ds, folder, [(1, uid(*ctx.uid_parts, "sop", series_number, 1), attrs, stored.tobytes())]
    )
    return SeriesTruth(
        series_uid=series_uid,
        series_number=series_number,
        description=ctx.vendor.scout,
        role="scout",
        modality="CT",
        sop_class_uid=CT_IMAGE_STORAGE,
        n_instances=1,
        directory=folder.name,
        kernel=ds.ConvolutionKernel,
        image_type=list(ds.ImageType),
        rows=img.shape[0],
        columns=img.shape[1],
    )


def write_dose_screen(
    study_dir: Path,
    ctx: StudyContext,
    lines: list[str],
    *,
    size: int = 512,
) -> SeriesTruth:
    """The vendor's dose page: a Secondary Capture image with the dose table burned in."""
    from PIL import Image, ImageDraw, ImageFont

    number = ctx.vendor.dose_series_number
    series_uid = uid(*ctx.uid_parts, "series", number)
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, line in enumerate(lines):
        draw.text((12, 12 + 16 * i), line, fill=230, font=font)
    pixels = np.asarray(img, dtype=np.uint8)
    ds = _base(ctx, SECONDARY_CAPTURE_STORAGE, "CT", series_uid, number, ctx.vendor.dose, 600.0)
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "YES"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    folder = study_dir / f"{number:03d}_dose"
    _write_all(ds, folder, [(1, uid(*ctx.uid_parts, "sop", number, 1), {}, pixels.tobytes())])
    return SeriesTruth(
        series_uid=series_uid,
        series_number=number,
        description=ctx.vendor.dose,
        role="dose",
        modality="CT",
        sop_class_uid=SECONDARY_CAPTURE_STORAGE,
        n_instances=1,
        directory=folder.name,
        image_type=list(ds.ImageType),
        rows=size,
        columns=size,
    )


@dataclass(frozen=True)
class MrSequence:
    name: str  # SeriesDescription / ProtocolName, e.g. t1_se_tra
    scanning_sequence: str
    sequence_variant: str
    tr_ms: float
    te_ms: float
    ti_ms: float | None = None


def write_mr_series(
    study_dir: Path,
    ctx: StudyContext,
    seq: MrSequence,
    series_number: int,
    image: np.ndarray,
    grid: Grid,
    field_t: float,
) -> SeriesTruth:
    series_uid = uid(*ctx.uid_parts, "series", series_number)
    ds = _base(
        ctx, MR_IMAGE_STORAGE, "MR", series_uid, series_number, seq.name, 60.0 * series_number
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.ProtocolName = seq.name
    ds.SequenceName = seq.name.split("_")[0]
    ds.ScanningSequence = seq.scanning_sequence
    ds.SequenceVariant = seq.sequence_variant
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = ds_number(seq.tr_ms)
    ds.EchoTime = ds_number(seq.te_ms)
    if seq.ti_ms is not None:
        ds.InversionTime = ds_number(seq.ti_ms)
    ds.EchoTrainLength = 1 if seq.scanning_sequence == "SE" else 15
    ds.MagneticFieldStrength = ds_number(field_t)
    ds.ImagingFrequency = ds_number(42.577 * field_t)
    ds.ImagedNucleus = "1H"
    ds.PatientPosition = "HFS"
    ds.SliceThickness = ds_number(grid.spacing_zyx_mm[0])
    ds.SpacingBetweenSlices = ds_number(grid.spacing_zyx_mm[0])
    ds.PixelSpacing = [ds_number(v) for v in grid.pixel_spacing_mm]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = grid.ny, grid.nx
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = ds_number(float(np.percentile(image, 70)))
    ds.WindowWidth = ds_number(float(np.percentile(image, 99) * 1.2) or 1.0)
    stored = np.clip(image, 0, 4095).astype(np.uint16)
    x0, y0, _ = grid.origin_lps_mm
    folder = study_dir / f"{series_number:03d}_mr"
    frames = []
    for k in range(grid.nz):
        z = grid.slice_position(k)[2]
        attrs: dict[str, object] = {
            "ImagePositionPatient": [ds_number(x0), ds_number(y0), ds_number(z)],
            "SliceLocation": ds_number(z),
        }
        frames.append(
            (k + 1, uid(*ctx.uid_parts, "sop", series_number, k + 1), attrs, stored[k].tobytes())
        )
    _write_all(ds, folder, frames)
    return SeriesTruth(
        series_uid=series_uid,
        series_number=series_number,
        description=seq.name,
        role="mr",
        modality="MR",
        sop_class_uid=MR_IMAGE_STORAGE,
        n_instances=grid.nz,
        directory=folder.name,
        image_type=list(ds.ImageType),
        slice_thickness_mm=grid.spacing_zyx_mm[0],
        spacing_between_slices_mm=grid.spacing_zyx_mm[0],
        rows=grid.ny,
        columns=grid.nx,
    )


def write_cr_image(
    study_dir: Path,
    ctx: StudyContext,
    image: np.ndarray,
    pixel_mm: float,
) -> SeriesTruth:
    """A PA chest radiograph (CR Image Storage), 12-bit, patient's right on the image left."""
    number = 1
    series_uid = uid(*ctx.uid_parts, "series", number)
    ds = _base(ctx, CR_IMAGE_STORAGE, "CR", series_uid, number, "CHEST PA", 0.0)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.KVP = ds_number(120.0)
    ds.ExposureTime = 10
    ds.XRayTubeCurrent = 250
    ds.PixelSpacing = [ds_number(pixel_mm), ds_number(pixel_mm)]
    ds.ImagerPixelSpacing = [ds_number(pixel_mm), ds_number(pixel_mm)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    folder = study_dir / f"{number:03d}_cr"
    _write_all(
        ds,
        folder,
        [
            (
                1,
                uid(*ctx.uid_parts, "sop", number, 1),
                {},
                np.clip(image, 0, 4095).astype(np.uint16).tobytes(),
            )
        ],
    )
    return SeriesTruth(
        series_uid=series_uid,
        series_number=number,
        description="CHEST PA",
        role="cr",
        modality="CR",
        sop_class_uid=CR_IMAGE_STORAGE,
        n_instances=1,
        directory=folder.name,
        image_type=list(ds.ImageType),
        rows=image.shape[0],
        columns=image.shape[1],
    )
