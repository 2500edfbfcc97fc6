"""DICOM Segmentation (SEG) of a model's findings, built with highdicom.

One segment per finding (PS3.3 C.8.20.4 Segment Description; codes from CID 7150
"Segmentation Property Categories" and CID 7151/7159 "Segmentation Property Types").

Conventions:

- ``mask_zyx`` is a label map whose slices follow the order of ``source_images`` *as given*;
  value 0 is background and value ``i`` marks finding ``findings[i - 1]``. The builder sorts
  the images by ImagePositionPatient along the slice normal and reorders the mask with them,
  so callers may pass the series in any order.
- Findings whose label is absent from the mask get no segment, and segment numbers are
  renumbered 1..k in finding order. A mask without any finding label (a normal study) gives
  no SEG: `build_seg` returns None.
- UIDs are derived, not random: the same study, model name, model version and
  ``seed_uid_entropy`` always give the same Series and SOP Instance UIDs, so a re-run writes
  the same object again and the archive keeps one copy (idempotency).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from pacsflow.domain import Finding, ModelRef
from pacsflow.errors import InvalidInputError

MANUFACTURER = "pacsflow"

# Segmented Property Type per finding kind (SCT, CID 7151 / CID 7159).
FINDING_TYPE_CODES: dict[str, hd.sr.CodedConcept] = {
    "hemorrhage": hd.sr.CodedConcept("50960005", "SCT", "Hemorrhage"),
    "nodule": hd.sr.CodedConcept("27925004", "SCT", "Nodule"),
}
# Anatomic Region of each finding kind (SCT, CID 4 "Anatomic Region").
ANATOMIC_REGION_CODES: dict[str, hd.sr.CodedConcept] = {
    "hemorrhage": hd.sr.CodedConcept("12738006", "SCT", "Brain"),
    "nodule": hd.sr.CodedConcept("39607008", "SCT", "Lung"),
}
# Segmented Property Category (CID 7150): every finding is an abnormal structure.
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = hd.sr.CodedConcept(
    "49755003", "SCT", "Morphologically Abnormal Structure"
)


def derived_uid(*parts: str) -> str:
    """A UID that depends only on ``parts`` (pydicom's root, SHA-512 of the parts)."""
    return str(generate_uid(entropy_srcs=["pacsflow", *parts]))


def finding_tracking_uid(
    study_uid: str, model: ModelRef, index: int, finding: Finding, seed_uid_entropy: str = ""
) -> str:
    """Tracking UID of finding number ``index`` (1-based); shared by the SEG and the SR."""
    if finding.tracking_uid:
        return finding.tracking_uid
    return derived_uid(
        study_uid, model.name, model.version, seed_uid_entropy, "finding", str(index)
    )


def finding_tracking_id(index: int, finding: Finding) -> str:
    """Human-readable tracking identifier of finding number ``index`` (1-based)."""
    return finding.tracking_id or f"{finding.kind}-{index}"


def finding_type_code(finding: Finding) -> hd.sr.CodedConcept:
    try:
        return FINDING_TYPE_CODES[finding.kind]
    except KeyError:
        raise InvalidInputError(
            f"finding kind {finding.kind!r} has no code; expected one of "
            f"{sorted(FINDING_TYPE_CODES)}"
        ) from None


def algorithm_identification(model: ModelRef) -> hd.AlgorithmIdentificationSequence:
    """Algorithm Identification Sequence (PS3.3 Table 10-19) for the model version."""
    parameters = {"run_id": model.run_id} if model.run_id else None
    return hd.AlgorithmIdentificationSequence(
        name=model.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=model.version,
        source=MANUFACTURER,
        parameters=parameters,
    )


def sort_by_slice_position(
    source_images: Sequence[pydicom.Dataset],
) -> list[int]:
    """Indices of ``source_images`` sorted by position along the slice normal.

    The normal is the cross product of the row and column direction cosines of
    ImageOrientationPatient (PS3.3 C.7.6.2.1.1); the position is the projection of
    ImagePositionPatient on it. All images must share one orientation and distinct positions.
    """
    if not source_images:
        raise InvalidInputError("no source images")
    try:
        orientation = np.asarray(source_images[0].ImageOrientationPatient, dtype=float)
        positions = [np.asarray(image.ImagePositionPatient, dtype=float) for image in source_images]
        orientations = [
            np.asarray(image.ImageOrientationPatient, dtype=float) for image in source_images
        ]
    except AttributeError as exc:
        raise InvalidInputError(f"source image lacks plane geometry: {exc}") from None
    if any(not np.allclose(o, orientation, atol=1e-4) for o in orientations):
        raise InvalidInputError("source images do not share one ImageOrientationPatient")
    normal = np.cross(orientation[:3], orientation[3:])
    distances = np.array([float(np.dot(p, normal)) for p in positions])
    order = [int(i) for i in np.argsort(distances, kind="stable")]
    gaps = np.diff(distances[order])
    if len(gaps) and np.min(gaps) < 1e-3:
        raise InvalidInputError("two source images share one slice position")
    return order


def _check_inputs(
    source_images: Sequence[pydicom.Dataset], mask_zyx: np.ndarray, findings: Sequence[Finding]
) -> None:
    first = source_images[0]
    for image in source_images:
        if image.StudyInstanceUID != first.StudyInstanceUID:
            raise InvalidInputError("source images belong to more than one study")
        if image.SeriesInstanceUID != first.SeriesInstanceUID:
            raise InvalidInputError("source images belong to more than one series")
    expected = (len(source_images), int(first.Rows), int(first.Columns))
    if mask_zyx.shape != expected:
        raise InvalidInputError(
            f"mask shape {mask_zyx.shape} does not match the source images {expected} "
            "(slices, rows, columns)"
        )
    if not np.issubdtype(mask_zyx.dtype, np.integer) and mask_zyx.dtype != np.bool_:
        raise InvalidInputError(f"mask must be an integer label map, not {mask_zyx.dtype}")
    if mask_zyx.size and int(mask_zyx.min()) < 0:
        raise InvalidInputError("mask has negative labels")
    top = int(mask_zyx.max()) if mask_zyx.size else 0
    if top > len(findings):
        raise InvalidInputError(f"mask label {top} has no finding (only {len(findings)} given)")


def build_seg(
    source_images: Sequence[pydicom.Dataset],
    mask_zyx: np.ndarray,
    findings: Sequence[Finding],
    model: ModelRef,
    *,
    series_number: int = 900,
    seed_uid_entropy: str = "",
) -> hd.seg.Segmentation | None:
    """Build a BINARY DICOM SEG with one segment per finding present in ``mask_zyx``.

    ``mask_zyx`` (slices, rows, columns) follows the order of ``source_images`` as given
    (label ``i`` = ``findings[i - 1]``); both are sorted together along the slice normal.
    Returns None when no finding label occurs in the mask. ``seed_uid_entropy`` (for
    example the source series UID) joins the study UID, model name and version in the
    derived UIDs. Raises InvalidInputError on inconsistent input.
    """
    _check_inputs(source_images, mask_zyx, findings)
    order = sort_by_slice_position(source_images)
    images = [source_images[i] for i in order]
    labels = np.asarray(mask_zyx)[order]
    study_uid = str(images[0].StudyInstanceUID)

    descriptions: list[hd.seg.SegmentDescription] = []
    planes: list[np.ndarray] = []
    algorithm = algorithm_identification(model)
    for index, finding in enumerate(findings, start=1):
        plane = labels == index
        if not plane.any():
            continue  # an empty segment says nothing: leave it out
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=len(descriptions) + 1,
                segment_label=_segment_label(finding),
                segmented_property_category=MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                segmented_property_type=finding_type_code(finding),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=finding_tracking_uid(
                    study_uid, model, index, finding, seed_uid_entropy
                ),
                tracking_id=finding_tracking_id(index, finding),
                anatomic_regions=[ANATOMIC_REGION_CODES[finding.kind]],
            )
        )
        planes.append(plane)
    if not descriptions:
        return None

    # Stacked-segments layout: (frames, rows, columns, segments), values 0/1.
    pixel_array = np.stack(planes, axis=-1).astype(np.uint8)
    seeds = (study_uid, model.name, model.version, seed_uid_entropy, "SEG")
    return hd.seg.Segmentation(
        source_images=images,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=derived_uid(*seeds, "series"),
        series_number=series_number,
        sop_instance_uid=derived_uid(*seeds, "instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model.name,
        software_versions=model.version,
        device_serial_number=model.run_id or "none",
        content_label="PACSFLOW_AI",
        content_description=_content_description(model, "segmentation"),
        series_description=_content_description(model, "SEG"),
        content_qualification=_content_qualification(model),
    )


def find_segment(
    seg: pydicom.Dataset, tracking_uid: str, tracking_id: str
) -> tuple[int, str] | None:
    """(Segment Number, Tracking UID) of a finding's segment in a SEG, or None.

    Matches the Tracking UID first, then the Tracking ID (in case the SEG was built with
    another ``seed_uid_entropy``, which changes derived tracking UIDs but not the IDs).
    """
    for key, wanted in (("TrackingUID", tracking_uid), ("TrackingID", tracking_id)):
        for item in seg.SegmentSequence:
            if str(item.get(key, "")) == wanted:
                return int(item.SegmentNumber), str(item.get("TrackingUID", tracking_uid))
    return None


def _segment_label(finding: Finding) -> str:
    label = f"{finding.subtype} {finding.kind}" if finding.subtype else finding.kind
    return label[:64]  # Segment Label is LO


def _content_description(model: ModelRef, what: str) -> str:
    text = f"AI {what} {model.name} {model.version}"
    if not model.approved:
        text += " NOT FOR CLINICAL USE"
    return text[:64]  # LO


def _content_qualification(model: ModelRef) -> str:
    # Content Qualification (0018,9004): output of a model not approved is RESEARCH.
    return "PRODUCT" if model.approved else "RESEARCH"
