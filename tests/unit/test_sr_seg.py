"""DICOM SEG and Comprehensive 3D SR of a model result: build, write, read back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pacsflow.dicom.seg import build_seg
from pacsflow.dicom.sr import (
    AI_GENERATED_TEXT,
    NOT_FOR_CLINICAL_USE_TEXT,
    build_sr,
    evidence_reference,
    read_sr_summary,
)
from pacsflow.domain import Finding, Location, ModelRef, Priority
from pacsflow.errors import InvalidInputError

SLICES, ROWS, COLUMNS = 8, 64, 64
BLOB_SLICES = range(2, 5)  # the blob covers slices 2, 3, 4 (in acquisition order)

needs_dcmtk = pytest.mark.skipif(
    shutil.which("dcmdump") is None or shutil.which("dsrdump") is None,
    reason="dcmtk (dcmdump, dsrdump) not installed",
)


def make_ct_series(slices: int = SLICES, spacing_mm: float = 5.0) -> list[Dataset]:
    """A small axial CT series with real plane geometry, in acquisition order."""
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    images = []
    for k in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PatientID = "PF-TEST-1"
        ds.PatientName = "Test^Phantom"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate, ds.StudyTime = "20260101", "120000"
        ds.AccessionNumber = "ACC-1"
        ds.StudyID = "1"
        ds.ReferringPhysicianName = ""
        ds.Modality = "CT"
        ds.Manufacturer = "test"
        ds.SeriesNumber = 2
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-16.0, -16.0, 100.0 + k * spacing_mm]
        ds.PixelSpacing = [0.5, 0.5]
        ds.SliceThickness = spacing_mm
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.KVP = 120
        pixels = np.full((ROWS, COLUMNS), 1024 + 40, dtype=np.int16)
        ds.PixelData = pixels.tobytes()
        images.append(ds)
    return images


def blob_mask(label: int = 1) -> np.ndarray:
    mask = np.zeros((SLICES, ROWS, COLUMNS), dtype=np.uint8)
    mask[BLOB_SLICES.start : BLOB_SLICES.stop, 20:30, 24:36] = label
    return mask


MODEL = ModelRef(name="ich-segresnet", version="7", run_id="run-abc", approved=False)
APPROVED = MODEL.model_copy(update={"approved": True})
HEMORRHAGE = Finding(
    kind="hemorrhage",
    subtype="intraparenchymal",
    probability=0.94,
    volume_ml=0.3,
    diameter_mm=6.0,
    location=Location(side="left", compartment="supratentorial", region="frontal lobe"),
)


@pytest.fixture
def ct() -> list[Dataset]:
    return make_ct_series()


def _frame_sources(seg: Dataset) -> list[str]:
    """The source image SOP Instance UID of each SEG frame."""
    return [
        str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for frame in seg.PerFrameFunctionalGroupsSequence
    ]


# --- SEG -----------------------------------------------------------------------------------


def test_seg_has_one_segment_whose_frames_match_the_mask(ct: list[Dataset]) -> None:
    seg = build_seg(ct, blob_mask(), [HEMORRHAGE], MODEL, seed_uid_entropy="s")

    assert seg is not None
    assert len(seg.SegmentSequence) == 1
    segment = seg.SegmentSequence[0]
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "50960005"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("ich-segresnet", "7")
    assert seg.NumberOfFrames == len(BLOB_SLICES)
    index_of = {str(image.SOPInstanceUID): k for k, image in enumerate(ct)}
    expected = blob_mask()
    frames = seg.pixel_array.reshape(-1, ROWS, COLUMNS)
    for frame, source_uid in zip(frames, _frame_sources(seg), strict=True):
        assert np.array_equal(frame, expected[index_of[source_uid]])
    assert seg.StudyInstanceUID == ct[0].StudyInstanceUID
    assert seg.ContentQualification == "RESEARCH"


def test_seg_sorts_images_given_in_any_order_with_their_mask(ct: list[Dataset]) -> None:
    ordered = build_seg(ct, blob_mask(), [HEMORRHAGE], MODEL, seed_uid_entropy="s")
    shuffle = [5, 0, 7, 3, 1, 6, 2, 4]
    shuffled = build_seg(
        [ct[i] for i in shuffle], blob_mask()[shuffle], [HEMORRHAGE], MODEL, seed_uid_entropy="s"
    )

    assert ordered is not None and shuffled is not None
    assert _frame_sources(shuffled) == _frame_sources(ordered)
    assert np.array_equal(shuffled.pixel_array, ordered.pixel_array)


def test_seg_uids_are_derived_from_study_model_and_version(ct: list[Dataset]) -> None:
    first = build_seg(ct, blob_mask(), [HEMORRHAGE], MODEL, seed_uid_entropy="s")
    again = build_seg(ct, blob_mask(), [HEMORRHAGE], MODEL, seed_uid_entropy="s")
    other_version = build_seg(
        ct,
        blob_mask(),
        [HEMORRHAGE],
        MODEL.model_copy(update={"version": "8"}),
        seed_uid_entropy="s",
    )

    assert first is not None and again is not None and other_version is not None
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.SeriesInstanceUID == again.SeriesInstanceUID
    assert other_version.SOPInstanceUID != first.SOPInstanceUID


def test_seg_of_a_normal_study_is_none(ct: list[Dataset]) -> None:
    empty = np.zeros((SLICES, ROWS, COLUMNS), dtype=np.uint8)
    assert build_seg(ct, empty, [], MODEL, seed_uid_entropy="s") is None


def test_seg_leaves_out_findings_without_voxels(ct: list[Dataset]) -> None:
    second = HEMORRHAGE.model_copy(update={"tracking_id": "second"})
    seg = build_seg(ct, blob_mask(label=2), [HEMORRHAGE, second], MODEL, seed_uid_entropy="s")

    assert seg is not None
    assert [s.SegmentNumber for s in seg.SegmentSequence] == [1]
    assert seg.SegmentSequence[0].TrackingID == "second"


@pytest.mark.parametrize(
    ("mask", "findings", "message"),
    [
        (np.zeros((SLICES - 1, ROWS, COLUMNS), np.uint8), [HEMORRHAGE], "mask shape"),
        (blob_mask(label=3), [HEMORRHAGE], "has no finding"),
        (blob_mask().astype(np.float32), [HEMORRHAGE], "integer label map"),
    ],
)
def test_seg_refuses_inconsistent_masks(
    ct: list[Dataset], mask: np.ndarray, findings: list[Finding], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        build_seg(ct, mask, findings, MODEL, seed_uid_entropy="s")


def test_seg_refuses_two_images_at_one_position(ct: list[Dataset]) -> None:
    ct[3].ImagePositionPatient = ct[2].ImagePositionPatient
    with pytest.raises(InvalidInputError, match="share one slice position"):
        build_seg(ct, blob_mask(), [HEMORRHAGE], MODEL, seed_uid_entropy="s")


# --- SR ------------------------------------------------------------------------------------


def _result_sr(ct: list[Dataset], model: ModelRef = MODEL) -> tuple[Dataset, Dataset]:
    seg = build_seg(ct, blob_mask(), [HEMORRHAGE], model, seed_uid_entropy="s")
    assert seg is not None
    sr = build_sr(
        ct,
        [HEMORRHAGE],
        model,
        seg=seg,
        study_probability=0.97,
        priority=Priority.CRITICAL,
        seed_uid_entropy="s",
    )
    return sr, seg


def test_sr_read_back_gives_volume_algorithm_and_segment(ct: list[Dataset]) -> None:
    sr, seg = _result_sr(ct)

    summary = read_sr_summary(sr)

    assert (summary.algorithm_name, summary.algorithm_version) == ("ich-segresnet", "7")
    assert (summary.completion_flag, summary.verification_flag) == ("PARTIAL", "UNVERIFIED")
    assert summary.finding_present is True
    assert summary.priority == "critical"
    assert summary.study_probability == pytest.approx(0.97)
    assert AI_GENERATED_TEXT in summary.notes
    (finding,) = summary.findings
    assert finding.kind == "hemorrhage"
    assert finding.volume_ml == pytest.approx(0.3)
    assert finding.diameter_mm == pytest.approx(6.0)
    assert finding.probability == pytest.approx(0.94)
    assert finding.seg_sop_instance_uid == seg.SOPInstanceUID
    assert finding.segment_number == 1
    assert finding.tracking_uid == seg.SegmentSequence[0].TrackingUID
    assert finding.sites == ["Frontal lobe, Left"]
    assert "Compartment: supratentorial" in finding.notes
    assert "Subtype: intraparenchymal" in finding.notes


def test_sr_finds_the_segment_even_when_uid_seeds_differ(ct: list[Dataset]) -> None:
    seg = build_seg(ct, blob_mask(), [HEMORRHAGE], MODEL, seed_uid_entropy="series-a")
    assert seg is not None
    sr = build_sr(
        ct, [HEMORRHAGE], MODEL, seg=seg, study_probability=0.9, priority=Priority.CRITICAL
    )

    (finding,) = read_sr_summary(sr).findings
    assert finding.segment_number == 1
    assert finding.tracking_uid == seg.SegmentSequence[0].TrackingUID


def test_sr_references_source_images_and_seg_as_evidence(ct: list[Dataset]) -> None:
    sr, seg = _result_sr(ct)

    referenced = {
        str(instance.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }
    assert referenced == {str(i.SOPInstanceUID) for i in ct} | {str(seg.SOPInstanceUID)}
    assert sr.StudyInstanceUID == ct[0].StudyInstanceUID
    assert sr.PatientID == ct[0].PatientID


def test_sr_uid_is_derived_so_a_rerun_writes_the_same_object(ct: list[Dataset]) -> None:
    first, _ = _result_sr(ct)
    again, _ = _result_sr(ct)
    other, _ = _result_sr(ct, MODEL.model_copy(update={"version": "8"}))

    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert first.SeriesInstanceUID == again.SeriesInstanceUID
    assert other.SOPInstanceUID != first.SOPInstanceUID


def test_sr_of_a_normal_study_says_no_finding(ct: list[Dataset]) -> None:
    sr = build_sr(ct, [], APPROVED, seg=None, study_probability=0.03, priority=Priority.ROUTINE)

    summary = read_sr_summary(sr)
    assert summary.findings == []
    assert summary.finding_present is False
    assert summary.priority == "routine"
    assert "No hemorrhage detected by the AI model" in summary.notes


def test_sr_of_a_study_not_analysed_gives_the_reasons(ct: list[Dataset]) -> None:
    sr = build_sr(
        ct,
        [],
        MODEL,
        seg=None,
        study_probability=None,
        priority=Priority.NOT_ANALYSED,
        not_analysed_reasons=["contrast-enhanced series", "slice thickness 10 mm"],
    )

    summary = read_sr_summary(sr)
    assert summary.finding_present is None
    assert summary.not_analysed_reasons == ["contrast-enhanced series", "slice thickness 10 mm"]
    assert summary.study_probability is None
    with pytest.raises(InvalidInputError, match="not analysed"):
        build_sr(
            ct,
            [HEMORRHAGE],
            MODEL,
            seg=None,
            study_probability=None,
            priority=Priority.NOT_ANALYSED,
        )


def test_sr_of_an_unapproved_model_is_marked_not_for_clinical_use(ct: list[Dataset]) -> None:
    unapproved, _ = _result_sr(ct, MODEL)
    approved, _ = _result_sr(ct, APPROVED)

    assert unapproved.ContentQualification == "RESEARCH"
    assert "NOT FOR CLINICAL USE" in unapproved.SeriesDescription
    summary = read_sr_summary(unapproved)
    assert NOT_FOR_CLINICAL_USE_TEXT in summary.notes
    assert summary.approved_model is False
    assert approved.ContentQualification == "PRODUCT"
    summary = read_sr_summary(approved)
    assert NOT_FOR_CLINICAL_USE_TEXT not in summary.notes
    assert summary.approved_model is True
    # An AI result is never a signed report, approved model or not.
    assert (summary.preliminary, summary.verification_flag) == (True, "UNVERIFIED")


def test_sr_of_a_nodule_without_segment_keeps_volume_and_diameter(ct: list[Dataset]) -> None:
    nodule = Finding(
        kind="nodule",
        subtype="solid",
        probability=0.8,
        volume_ml=0.52,
        diameter_mm=9.5,
        location=Location(region="right upper lobe"),
    )
    model = ModelRef(name="nodule-net", version="2")
    sr = build_sr(ct, [nodule], model, seg=None, study_probability=0.8, priority=Priority.URGENT)

    summary = read_sr_summary(sr)
    (finding,) = summary.findings
    assert (finding.kind, finding.segment_number) == ("nodule", None)
    assert finding.volume_ml == pytest.approx(0.52)
    assert finding.diameter_mm == pytest.approx(9.5)
    assert finding.sites == ["Upper lobe of lung, Right"]
    procedure = [
        item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "121058"
    ]
    assert procedure[0].ConceptCodeSequence[0].CodeValue == "24627-2"


def test_sr_of_a_followup_nodule_keeps_identity_centre_and_comparison(ct: list[Dataset]) -> None:
    prior = evidence_reference(
        "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", CTImageStorage, "1.2.3.4"
    )
    nodule = Finding(
        kind="nodule",
        subtype="part-solid",
        probability=0.9,
        volume_ml=0.9,
        diameter_mm=13.0,
        mean_diameter_mm=11.5,
        solid_diameter_mm=6.2,
        centroid_mm=(-80.5, 20.25, -210.0),
        tracking_id="N1",
        tracking_uid="1.2.826.0.1.3680043.8.498.77",
        notes=["Prior 2025-01-03: mean diameter 9.0 mm, +2.5 mm"],
    )
    model = ModelRef(name="nodule-net", version="2")
    sr = build_sr(
        ct,
        [nodule],
        model,
        seg=None,
        study_probability=0.9,
        priority=Priority.URGENT,
        comparison=["2025-01-03 (1.2.826.0.1.3680043.8.498.1)"],
        prior_evidence=[prior],
    )

    summary = read_sr_summary(sr)
    (finding,) = summary.findings
    assert (finding.tracking_id, finding.tracking_uid) == ("N1", "1.2.826.0.1.3680043.8.498.77")
    assert finding.centroid_mm == pytest.approx((-80.5, 20.25, -210.0))
    assert finding.mean_diameter_mm == pytest.approx(11.5)
    assert (finding.subtype, finding.solid_diameter_mm) == ("part-solid", pytest.approx(6.2))
    assert "Prior 2025-01-03: mean diameter 9.0 mm, +2.5 mm" in finding.notes
    assert summary.comparison == ["2025-01-03 (1.2.826.0.1.3680043.8.498.1)"]
    assert summary.prior_study_uids == ["1.2.826.0.1.3680043.8.498.1"]


def test_read_sr_summary_refuses_an_image(ct: list[Dataset]) -> None:
    with pytest.raises(InvalidInputError):
        read_sr_summary(ct[0])


@needs_dcmtk
def test_seg_and_sr_written_to_disk_read_back_and_pass_dcmtk(
    ct: list[Dataset], tmp_path: Path
) -> None:
    sr, seg = _result_sr(ct)
    sr_path, seg_path = tmp_path / "sr.dcm", tmp_path / "seg.dcm"
    pydicom.dcmwrite(sr_path, sr, enforce_file_format=True)
    pydicom.dcmwrite(seg_path, seg, enforce_file_format=True)

    reread_seg = pydicom.dcmread(seg_path)
    assert reread_seg.SOPInstanceUID == seg.SOPInstanceUID
    assert reread_seg.NumberOfFrames == len(BLOB_SLICES)
    summary = read_sr_summary(pydicom.dcmread(sr_path))
    assert summary.findings[0].volume_ml == pytest.approx(0.3)
    assert summary.algorithm_version == "7"

    for command in (
        ["dcmdump", str(seg_path)],
        ["dcmdump", str(sr_path)],
        ["dsrdump", str(sr_path)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        problems = [line for line in done.stderr.splitlines() if line[:2] in {"E:", "W:", "F:"}]
        assert problems == [], problems
    dump = subprocess.run(
        ["dsrdump", str(sr_path)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "Comprehensive 3D SR" in dump
    assert '"Volume")="0.3" (mL,UCUM,"milliliter")' in dump
