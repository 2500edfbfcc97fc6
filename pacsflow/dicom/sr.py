"""Comprehensive 3D SR (TID 1500 Measurement Report) of a model's result, and its read-back.

Content tree (PS3.16 TID 1500):

- Observer context: a device observer (TID 1004) for the algorithm: name = model name,
  manufacturer "pacsflow", model name = model version, serial number = MLflow run id.
- Procedure reported: CT head (LN 24725-4) or CT chest (LN 24627-2) by finding kind.
- Imaging Measurements:
  - one study-level group (TID 1501, tracking identifier ``STUDY_GROUP_ID``): finding
    Present / Absent / "not analysed" as a coded qualitative evaluation, the triage priority,
    the study probability, and TEXT qualitative evaluations: "AI-generated result", the
    not-for-clinical-use statement when the model version is not approved, and one
    "Not analysed: <reason>" per reason;
  - one group per finding: TID 1411 Volumetric ROI with a Referenced Segment into the SEG
    when the finding has a segment, else TID 1501; finding type, finding sites, volume (mL),
    diameter (mm), probability, and free-text location details (compartment, region, subtype).

A normal study gives the study-level group alone, with the finding "Absent". A study the
pathway may not read gives an SR too (the "not analysed" form) so that the reader sees the AI
did not read it and why; the caller decides whether to store it.

Completion Flag PARTIAL, Verification Flag UNVERIFIED and Preliminary Flag PRELIMINARY always:
no human signed this. When the model version is not approved, Content Qualification is
RESEARCH, the series description and a TEXT item say "not for clinical use". UIDs are
derived from the study UID, model name and version (see `seg.derived_uid`).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr.templates import Template
from highdicom.sr.utils import find_content_items
from pydantic import BaseModel, Field
from pydicom.sr.codedict import codes

from pacsflow.dicom.seg import (
    ANATOMIC_REGION_CODES,
    FINDING_TYPE_CODES,
    MANUFACTURER,
    MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
    derived_uid,
    find_segment,
    finding_tracking_id,
    finding_tracking_uid,
    finding_type_code,
)
from pacsflow.domain import Finding, Location, ModelRef, Priority
from pacsflow.errors import InvalidInputError

CodedConcept = hd.sr.CodedConcept

# Private coding scheme for concepts no standard terminology has (PS3.3 C.12.1.1.2: private
# designators start with "99"); declared in the Coding Scheme Identification Sequence.
PRIVATE_SCHEME = "99PACSFLOW"

UNIT_ML = CodedConcept("mL", "UCUM", "milliliter")
UNIT_MM = CodedConcept("mm", "UCUM", "millimeter")
UNIT_NONE = CodedConcept("1", "UCUM", "no units")

CODE_VOLUME = CodedConcept("118565006", "SCT", "Volume")
CODE_DIAMETER = CodedConcept("81827009", "SCT", "Diameter")
CODE_PROBABILITY = CodedConcept("122157", "DCM", "Probability")
CODE_MEAN = CodedConcept("373098007", "SCT", "Mean")
CODE_PRIORITY = CodedConcept("260870009", "SCT", "Priority")
CODE_PRESENT = CodedConcept("52101004", "SCT", "Present")
CODE_ABSENT = CodedConcept("272519000", "SCT", "Absent")
CODE_NOT_ANALYSED = CodedConcept("NOT_ANALYSED", PRIVATE_SCHEME, "Not analysed")
CODE_VOXEL_SUM_VOLUME = CodedConcept("126030", "DCM", "Sum of segmented voxel method for volume")
# TID 1501 row "Qualitative Evaluations" as TEXT (and as CODE for coded evaluations).
CODE_QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")

PRIORITY_CODES: dict[Priority, CodedConcept] = {
    p: CodedConcept(p.value.upper(), PRIVATE_SCHEME, p.value.replace("_", " ").capitalize())
    for p in Priority
}
PROCEDURE_CODES: dict[str, CodedConcept] = {
    "hemorrhage": CodedConcept("24725-4", "LN", "CT Head"),
    "nodule": CodedConcept("24627-2", "LN", "CT Chest"),
}
LATERALITY_CODES: dict[str, CodedConcept] = {
    "left": CodedConcept("7771000", "SCT", "Left"),
    "right": CodedConcept("24028007", "SCT", "Right"),
    "bilateral": CodedConcept("51440002", "SCT", "Bilateral"),
}
CODE_MIDLINE = CodedConcept("261129000", "SCT", "Midline")
# Region words -> SCT anatomic location (CID 7151 members), checked in this order.
REGION_CODES: tuple[tuple[str, CodedConcept], ...] = (
    ("frontal", CodedConcept("83251001", "SCT", "Frontal lobe")),
    ("parietal", CodedConcept("16630005", "SCT", "Parietal lobe")),
    ("temporal", CodedConcept("78277001", "SCT", "Temporal lobe")),
    ("occipital", CodedConcept("31065004", "SCT", "Occipital lobe")),
    ("cerebell", CodedConcept("113305005", "SCT", "Cerebellum")),
    ("brain stem", CodedConcept("119238007", "SCT", "Brain stem")),
    ("brainstem", CodedConcept("119238007", "SCT", "Brain stem")),
    ("ventric", CodedConcept("35764002", "SCT", "Brain ventricle")),
    ("subarachnoid", CodedConcept("35951006", "SCT", "Subarachnoid space")),
    ("upper lobe", CodedConcept("45653009", "SCT", "Upper lobe of lung")),
    ("middle lobe", CodedConcept("72481006", "SCT", "Middle lobe of right lung")),
    ("lower lobe", CodedConcept("90572001", "SCT", "Lower lobe of lung")),
)

STUDY_GROUP_ID = "AI study result"
AI_GENERATED_TEXT = "AI-generated result"
NOT_FOR_CLINICAL_USE_TEXT = (
    "PRELIMINARY - NOT FOR CLINICAL USE: the model version is not approved for clinical use"
)
NOT_ANALYSED_PREFIX = "Not analysed: "
COMPARISON_PREFIX = "Comparison: "
SUBTYPE_PREFIX = "Subtype: "
SOLID_PREFIX = "Solid component (mm): "
CENTRE_PREFIX = "Centre (LPS, mm): "


class SrFinding(BaseModel):
    """One finding as read back from an SR."""

    kind: str | None  # "hemorrhage" | "nodule", None for an unknown finding type
    finding_type: str  # code meaning as written
    tracking_uid: str | None = None
    tracking_id: str | None = None
    volume_ml: float | None = None
    diameter_mm: float | None = None
    mean_diameter_mm: float | None = None
    solid_diameter_mm: float | None = None
    subtype: str | None = None
    centroid_mm: tuple[float, float, float] | None = None
    probability: float | None = None
    segment_number: int | None = None
    seg_sop_instance_uid: str | None = None
    sites: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class SrSummary(BaseModel):
    """What an AI result SR says, read back through highdicom."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    algorithm_name: str | None
    algorithm_version: str | None
    completion_flag: str
    verification_flag: str
    preliminary: bool  # Preliminary Flag (0040,A496) is PRELIMINARY
    approved_model: bool  # Content Qualification PRODUCT: the model version is approved
    finding_present: bool | None  # None when the study was not analysed
    not_analysed_reasons: list[str] = Field(default_factory=list)
    priority: str | None = None
    study_probability: float | None = None
    notes: list[str] = Field(default_factory=list)
    comparison: list[str] = Field(default_factory=list)
    prior_study_uids: list[str] = Field(default_factory=list)  # Pertinent Other Evidence
    findings: list[SrFinding] = Field(default_factory=list)


def build_sr(
    source_images: Sequence[pydicom.Dataset],
    findings: Sequence[Finding],
    model: ModelRef,
    *,
    seg: hd.seg.Segmentation | None,
    study_probability: float | None,
    priority: Priority,
    not_analysed_reasons: list[str] | None = None,
    finding_kind: str | None = None,
    series_number: int = 901,
    seed_uid_entropy: str = "",
    comparison: Sequence[str] = (),
    prior_evidence: Sequence[pydicom.Dataset] = (),
) -> hd.sr.Comprehensive3DSR:
    """Build the Comprehensive 3D SR (TID 1500) for one model result on one series.

    ``seg`` is the SEG from `build_seg` for the same findings and ``seed_uid_entropy`` (or
    None); a finding whose segment is in it gets a Referenced Segment. ``finding_kind``
    ("hemorrhage" | "nodule") is what the model looks for; it defaults to the kind of the
    findings, else "hemorrhage", and picks the procedure code and the Present/Absent concept.
    ``comparison`` lines ("Comparison: ..." texts of the study group) describe the priors the
    result was compared with; ``prior_evidence`` (see `evidence_reference`) lists instances of
    those prior studies, recorded in the Pertinent Other Evidence Sequence.
    A study not analysed (``not_analysed_reasons`` given, or priority NOT_ANALYSED) must
    have no findings. Raises InvalidInputError on inconsistent input.
    """
    if not source_images:
        raise InvalidInputError("no source images for the SR")
    kind = _target_kind(findings, finding_kind)
    reasons = list(not_analysed_reasons or [])
    not_analysed = bool(reasons) or priority == Priority.NOT_ANALYSED
    if not_analysed and findings:
        raise InvalidInputError("a study that was not analysed cannot have findings")
    if study_probability is not None and not 0.0 <= study_probability <= 1.0:
        raise InvalidInputError(f"study probability {study_probability} is not in [0, 1]")
    study_uid = str(source_images[0].StudyInstanceUID)
    if seg is not None and str(seg.StudyInstanceUID) != study_uid:
        raise InvalidInputError("the SEG belongs to another study than the source images")

    algorithm = hd.sr.AlgorithmIdentification(name=model.name, version=model.version)
    groups: list[
        hd.sr.MeasurementsAndQualitativeEvaluations
        | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    ] = [
        _study_group(
            study_uid,
            model,
            kind,
            algorithm,
            finding_present=None if not_analysed else bool(findings),
            priority=priority,
            study_probability=study_probability,
            reasons=reasons,
            seed_uid_entropy=seed_uid_entropy,
            comparison=comparison,
        )
    ]
    source_series_uid = str(source_images[0].SeriesInstanceUID)
    for index, finding in enumerate(findings, start=1):
        groups.append(
            _finding_group(
                study_uid,
                model,
                index,
                finding,
                algorithm,
                seg=seg,
                source_series_uid=source_series_uid,
                seed_uid_entropy=seed_uid_entropy,
            )
        )

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid("device", model.name, model.version),
        name=model.name,
        manufacturer_name=MANUFACTURER,
        model_name=model.version,
        serial_number=model.run_id,
    )
    observation_context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.cid270.Device,
            observer_identifying_attributes=device,
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=PROCEDURE_CODES[kind],
        imaging_measurements=groups,
    )
    evidence = [*source_images, *([seg] if seg is not None else []), *prior_evidence]
    seeds = (study_uid, model.name, model.version, seed_uid_entropy, "SR")
    description = f"AI result {model.name} {model.version}"
    if not model.approved:
        description += " NOT FOR CLINICAL USE"
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=derived_uid(*seeds, "series"),
        series_number=series_number,
        sop_instance_uid=derived_uid(*seeds, "instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=False,
        is_final=False,
        is_verified=False,
        series_description=description[:64],
        manufacturer_model_name=model.name[:64],
        software_versions=model.version,
        content_qualification="PRODUCT" if model.approved else "RESEARCH",
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=PRIVATE_SCHEME,
                name="pacsflow local codes",
                responsible_organization=MANUFACTURER,
            )
        ],
    )
    return sr


def read_sr_summary(ds: pydicom.Dataset) -> SrSummary:
    """Parse an AI result SR (as written by `build_sr`) through highdicom.

    Raises InvalidInputError when ``ds`` is not a TID 1500 Measurement Report.
    """
    try:
        sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    except (ValueError, AttributeError) as exc:
        raise InvalidInputError(f"not a readable Comprehensive 3D SR: {exc}") from None
    report = sr.content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise InvalidInputError("the SR content is not a TID 1500 Measurement Report")

    name = _first_text(report[0], codes.DCM.AlgorithmName)
    version = _first_text(report[0], codes.DCM.AlgorithmVersion)
    if name is None or version is None:
        observers = report.get_observer_contexts(observer_type=codes.cid270.Device)
        if observers:
            attributes = observers[0].observer_identifying_attributes
            name = name or getattr(attributes, "name", None)
            version = version or getattr(attributes, "model_name", None)

    summary = SrSummary(
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        algorithm_name=name,
        algorithm_version=version,
        completion_flag=str(ds.CompletionFlag),
        verification_flag=str(ds.VerificationFlag),
        preliminary=str(ds.get("PreliminaryFlag", "")) == "PRELIMINARY",
        approved_model=str(ds.get("ContentQualification", "")) == "PRODUCT",
        finding_present=None,
    )
    for group in report.get_image_measurement_groups():
        if group.tracking_identifier == STUDY_GROUP_ID:
            _read_study_group(group, summary)
        elif group.finding_type is not None:
            summary.findings.append(_read_finding_group(group))
    for group in report.get_volumetric_roi_measurement_groups():
        finding = _read_finding_group(group)
        segment = group.referenced_segment
        if segment is not None:
            finding.seg_sop_instance_uid = str(segment.referenced_sop_instance_uid)
            numbers = segment.referenced_segment_numbers
            finding.segment_number = int(numbers[0]) if numbers else None
        summary.findings.append(finding)
    summary.prior_study_uids = sorted(
        {str(item.StudyInstanceUID) for item in ds.get("PertinentOtherEvidenceSequence", [])}
    )
    order = _group_order(report)
    summary.findings.sort(
        key=lambda f: order.index(f.tracking_uid) if f.tracking_uid in order else len(order)
    )
    return summary


# --- building -------------------------------------------------------------------------------


def _target_kind(findings: Sequence[Finding], finding_kind: str | None) -> str:
    kinds = {f.kind for f in findings}
    if finding_kind is None:
        finding_kind = next(iter(kinds)) if len(kinds) == 1 else "hemorrhage"
    if finding_kind not in PROCEDURE_CODES:
        raise InvalidInputError(
            f"finding kind {finding_kind!r} is not one of {sorted(PROCEDURE_CODES)}"
        )
    for finding in findings:
        finding_type_code(finding)  # raises on an unknown kind
    return finding_kind


def _text(value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=CODE_QUALITATIVE_EVALUATIONS,
        value=value[:1024],  # keep UT items short and readable
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )


def _add_texts(group: Template, texts: Sequence[str]) -> None:
    # highdicom's TID 1501 builder takes coded evaluations only; TEXT evaluations are
    # appended to the group container (TID 1501 allows TEXT "Qualitative Evaluations").
    if texts:
        container = group[0]
        container.ContentSequence.extend(_text(t) for t in texts)


def _study_group(
    study_uid: str,
    model: ModelRef,
    kind: str,
    algorithm: hd.sr.AlgorithmIdentification,
    *,
    finding_present: bool | None,
    priority: Priority,
    study_probability: float | None,
    reasons: list[str],
    seed_uid_entropy: str,
    comparison: Sequence[str] = (),
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    state = {None: CODE_NOT_ANALYSED, True: CODE_PRESENT, False: CODE_ABSENT}[finding_present]
    evaluations = [
        hd.sr.QualitativeEvaluation(name=FINDING_TYPE_CODES[kind], value=state),
        hd.sr.QualitativeEvaluation(name=CODE_PRIORITY, value=PRIORITY_CODES[priority]),
    ]
    measurements = []
    if study_probability is not None:
        measurements.append(
            hd.sr.Measurement(
                name=CODE_PROBABILITY,
                value=float(study_probability),
                unit=UNIT_NONE,
                algorithm_id=algorithm,
            )
        )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(study_uid, model.name, model.version, seed_uid_entropy, "study"),
            identifier=STUDY_GROUP_ID,
        ),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(ANATOMIC_REGION_CODES[kind])],
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )
    texts = [AI_GENERATED_TEXT]
    if not model.approved:
        texts.append(NOT_FOR_CLINICAL_USE_TEXT)
    if finding_present is False:
        texts.append(f"No {kind} detected by the AI model")
    texts.extend(NOT_ANALYSED_PREFIX + reason for reason in reasons)
    if finding_present is None and not reasons:
        texts.append(NOT_ANALYSED_PREFIX + "no reason given")
    texts.extend(COMPARISON_PREFIX + line for line in comparison)
    _add_texts(group, texts)
    return group


def _finding_sites(finding: Finding) -> list[hd.sr.FindingSite]:
    location: Location = finding.location
    region = (location.region or "").lower()
    anatomic = next((code for word, code in REGION_CODES if word in region), None)
    side = (location.side or "").lower()
    if not side:
        side = next((s for s in ("left", "right") if s in region.split()), "")
    return [
        hd.sr.FindingSite(
            anatomic_location=anatomic or ANATOMIC_REGION_CODES[finding.kind],
            laterality=LATERALITY_CODES.get(side),
            topographical_modifier=CODE_MIDLINE if side == "midline" else None,
        )
    ]


def _finding_texts(finding: Finding) -> list[str]:
    texts = []
    if finding.subtype:
        texts.append(SUBTYPE_PREFIX + finding.subtype)
    if finding.location.compartment:
        texts.append(f"Compartment: {finding.location.compartment}")
    if finding.location.region:
        texts.append(f"Region: {finding.location.region}")
    if finding.solid_diameter_mm is not None:
        texts.append(f"{SOLID_PREFIX}{finding.solid_diameter_mm:.1f}")
    if finding.centroid_mm is not None:
        # Where the finding is, so a later exam can match it without the SEG.
        texts.append(CENTRE_PREFIX + ", ".join(f"{c:.2f}" for c in finding.centroid_mm))
    texts.extend(finding.notes)
    return texts


def _finding_measurements(
    finding: Finding, algorithm: hd.sr.AlgorithmIdentification
) -> list[hd.sr.Measurement]:
    measurements = [
        hd.sr.Measurement(
            name=CODE_PROBABILITY,
            value=float(finding.probability),
            unit=UNIT_NONE,
            algorithm_id=algorithm,
        )
    ]
    if finding.volume_ml is not None:
        measurements.append(
            hd.sr.Measurement(
                name=CODE_VOLUME,
                value=float(finding.volume_ml),
                unit=UNIT_ML,
                method=CODE_VOXEL_SUM_VOLUME,
                algorithm_id=algorithm,
            )
        )
    if finding.diameter_mm is not None:
        measurements.append(
            hd.sr.Measurement(
                name=CODE_DIAMETER,
                value=float(finding.diameter_mm),
                unit=UNIT_MM,
                algorithm_id=algorithm,
            )
        )
    if finding.mean_diameter_mm is not None:
        measurements.append(
            hd.sr.Measurement(
                name=CODE_DIAMETER,
                value=float(finding.mean_diameter_mm),
                unit=UNIT_MM,
                derivation=CODE_MEAN,
                algorithm_id=algorithm,
            )
        )
    return measurements


def _finding_group(
    study_uid: str,
    model: ModelRef,
    index: int,
    finding: Finding,
    algorithm: hd.sr.AlgorithmIdentification,
    *,
    seg: hd.seg.Segmentation | None,
    source_series_uid: str,
    seed_uid_entropy: str,
) -> (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
):
    tracking_uid = finding_tracking_uid(study_uid, model, index, finding, seed_uid_entropy)
    tracking_id = finding_tracking_id(index, finding)
    segment = find_segment(seg, tracking_uid, tracking_id) if seg is not None else None
    if segment is not None:
        tracking_uid = segment[1]  # one tracking UID for the finding in SEG and SR
    common = {
        "tracking_identifier": hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=tracking_id),
        "finding_category": MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        "finding_type": finding_type_code(finding),
        "algorithm_id": algorithm,
        "finding_sites": _finding_sites(finding),
        "measurements": _finding_measurements(finding, algorithm),
    }
    group: (
        hd.sr.MeasurementsAndQualitativeEvaluations
        | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    )
    if seg is not None and segment is not None:
        # highdicom's ReferencedSegment.from_segmentation fails on single-segment SEGs
        # (0.28.2), so the reference is built from the SEG's UIDs and the source series.
        referenced = hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=segment[0],
            source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid),
        )
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=referenced, **common
        )
    else:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(**common)
    _add_texts(group, _finding_texts(finding))
    return group


def evidence_reference(
    study_uid: str, series_uid: str, sop_class_uid: str, sop_instance_uid: str
) -> pydicom.Dataset:
    """The identifiers of one instance of another study, enough to list it as evidence
    (e.g. a prior exam's image or SR found by QIDO) without retrieving it."""
    ds = pydicom.Dataset()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    return ds


# --- reading --------------------------------------------------------------------------------


def _first_text(item: pydicom.Dataset, name: object) -> str | None:
    found = find_content_items(item, name=name, recursive=True)  # type: ignore[arg-type]
    return str(found[0].TextValue) if found else None


def _texts(group: Template) -> list[str]:
    items = find_content_items(
        group[0], name=CODE_QUALITATIVE_EVALUATIONS, value_type=hd.sr.ValueTypeValues.TEXT
    )
    return [str(item.TextValue) for item in items]


def _measurement_value(
    group: Template, name: CodedConcept, unit_scale: dict[str, float]
) -> float | None:
    for measurement in group.get_measurements(name=name):
        if measurement.derivation is not None:
            continue  # a derived value (e.g. mean diameter) is not the primary one
        scale = unit_scale.get(measurement.unit.value)
        if scale is None:
            raise InvalidInputError(f"{name.meaning} in unexpected unit {measurement.unit.value!r}")
        return float(measurement.value) * scale
    return None


_ML = {"mL": 1.0, "ml": 1.0, "cm3": 1.0, "mm3": 0.001}
_MM = {"mm": 1.0, "cm": 10.0}
_UNITLESS = {"1": 1.0, "%": 0.01}


def _key(code: CodedConcept | None) -> tuple[str, str] | None:
    return (str(code.value), str(code.scheme_designator)) if code is not None else None


_KIND_BY_CODE = {_key(code): kind for kind, code in FINDING_TYPE_CODES.items()}
_PRESENCE_BY_CODE = {_key(CODE_PRESENT): True, _key(CODE_ABSENT): False}


def _read_study_group(group: Template, summary: SrSummary) -> None:
    for evaluation in group.get_qualitative_evaluations():
        if _key(evaluation.name) == _key(CODE_PRIORITY):
            summary.priority = str(evaluation.value.value).lower()
        elif _key(evaluation.name) in _KIND_BY_CODE:
            summary.finding_present = _PRESENCE_BY_CODE.get(_key(evaluation.value))
    summary.study_probability = _measurement_value(group, CODE_PROBABILITY, _UNITLESS)
    summary.notes = _texts(group)
    summary.not_analysed_reasons = [
        t.removeprefix(NOT_ANALYSED_PREFIX)
        for t in summary.notes
        if t.startswith(NOT_ANALYSED_PREFIX)
    ]
    summary.comparison = [
        t.removeprefix(COMPARISON_PREFIX) for t in summary.notes if t.startswith(COMPARISON_PREFIX)
    ]


def _prefixed(texts: Sequence[str], prefix: str) -> str | None:
    return next((t.removeprefix(prefix) for t in texts if t.startswith(prefix)), None)


def _mean_diameter(group: Template) -> float | None:
    for measurement in group.get_measurements(name=CODE_DIAMETER):
        if _key(measurement.derivation) == _key(CODE_MEAN):
            return float(measurement.value) * _MM.get(measurement.unit.value, 1.0)
    return None


def _read_finding_group(group: Template) -> SrFinding:
    finding_type = group.finding_type
    notes = _texts(group)
    centre = _prefixed(notes, CENTRE_PREFIX)
    solid = _prefixed(notes, SOLID_PREFIX)
    centroid = None
    if centre is not None:
        try:
            x, y, z = (float(v) for v in centre.split(","))
            centroid = (x, y, z)
        except ValueError:
            centroid = None  # written by something else: the finding just has no centre
    return SrFinding(
        kind=_KIND_BY_CODE.get(_key(finding_type)),
        finding_type=finding_type.meaning if finding_type is not None else "",
        tracking_uid=str(group.tracking_uid) if group.tracking_uid else None,
        tracking_id=group.tracking_identifier,
        volume_ml=_measurement_value(group, CODE_VOLUME, _ML),
        diameter_mm=_measurement_value(group, CODE_DIAMETER, _MM),
        mean_diameter_mm=_mean_diameter(group),
        solid_diameter_mm=float(solid) if solid is not None else None,
        subtype=_prefixed(notes, SUBTYPE_PREFIX),
        centroid_mm=centroid,
        probability=_measurement_value(group, CODE_PROBABILITY, _UNITLESS),
        sites=[_site_text(site) for site in group.finding_sites],
        notes=notes,
    )


def _site_text(site: hd.sr.FindingSite) -> str:
    """Anatomic location with laterality / modifier when present, e.g. "Frontal lobe, Left"."""
    parts = [str(site.value.meaning)]
    for modifier in (site.laterality, site.topographical_modifier):
        if modifier is not None:
            parts.append(str(modifier.meaning))
    return ", ".join(parts)


def _group_order(report: hd.sr.MeasurementReport) -> list[str]:
    """Tracking UIDs of the measurement groups in document order."""
    containers = find_content_items(report[0], name=codes.DCM.ImagingMeasurements)
    if not containers:
        return []
    order = []
    for item in containers[0].ContentSequence:
        uids = find_content_items(item, name=codes.DCM.TrackingUniqueIdentifier)
        order.append(str(uids[0].UID) if uids else "")
    return order
