"""DICOM studies written by pacsflow.synth.studies: files, headers, geometry, truth."""

from __future__ import annotations

import shutil
import subprocess
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pacsflow.synth.patients import PatientSpec
from pacsflow.synth.phantoms import with_visible_volume
from pacsflow.synth.specs import Hemorrhage, Nodule
from pacsflow.synth.studies import (
    load_truth,
    write_chest_ct_study,
    write_head_ct_study,
    write_non_ct_study,
    write_patient_history,
)
from pacsflow.synth.truth import TRUTH_FILENAME, SeriesTruth, StudyTruth

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def read_series(study_dir: Path, series: SeriesTruth) -> list[pydicom.Dataset]:
    files = sorted((study_dir / series.directory).glob("*.dcm"))
    assert len(files) == series.n_instances
    return [pydicom.dcmread(f) for f in files]


def volume_hu(datasets: list[pydicom.Dataset]) -> np.ndarray:
    """Slices ordered by position (never by InstanceNumber), rescaled to HU."""
    ordered = sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
    return np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in ordered]
    )


@pytest.fixture(scope="module")
def head_study(tmp_path_factory: pytest.TempPathFactory) -> StudyTruth:
    return write_head_ct_study(
        tmp_path_factory.mktemp("head") / "study",
        seed=21,
        hemorrhages=[Hemorrhage("intraparenchymal", 20.0, "left", "basal ganglia")],
        matrix=128,
        vendor="siemens",
        with_dose_report=True,
    )


def test_head_study_series_and_truth(head_study: StudyTruth) -> None:
    study_dir = Path(head_study.directory)
    roles = [s.role for s in head_study.series]
    assert roles == ["scout", "thick", "bone", "dose"]
    assert head_study.kind == "head_ct" and head_study.vendor == "siemens"
    assert head_study.reference_series_uid == head_study.series_by_role("thick")[0].series_uid
    assert (study_dir / TRUTH_FILENAME).is_file()
    assert load_truth(study_dir) == head_study
    assert load_truth(study_dir / TRUTH_FILENAME).to_json() == head_study.to_json()
    (les,) = head_study.lesions
    assert les.volume_ml == pytest.approx(20.0, rel=0.15)
    assert les.location.side == "left" and les.location.region == "basal ganglia"


def test_every_file_is_readable_dicom_with_consistent_identifiers(head_study: StudyTruth) -> None:
    study_dir = Path(head_study.directory)
    sop_uids = set()
    for series in head_study.series:
        for ds in read_series(study_dir, series):
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.SOPClassUID == series.sop_class_uid
            assert ds.StudyInstanceUID == head_study.study_uid
            assert ds.SeriesInstanceUID == series.series_uid
            assert ds.SeriesNumber == series.series_number
            assert ds.AccessionNumber == head_study.accession_number
            assert ds.PatientID == head_study.patient_id
            assert ds.Manufacturer == "SIEMENS"
            assert ds.pixel_array.shape == (series.rows, series.columns)
            sop_uids.add(ds.SOPInstanceUID)
    assert len(sop_uids) == sum(s.n_instances for s in head_study.series)


def test_scout_and_axial_headers(head_study: StudyTruth) -> None:
    study_dir = Path(head_study.directory)
    (scout,) = read_series(study_dir, head_study.series_by_role("scout")[0])
    assert list(scout.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    axial = read_series(study_dir, head_study.series_by_role("thick")[0])[0]
    assert list(axial.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert axial.Modality == "CT" and axial.SOPClassUID == CT_IMAGE_STORAGE
    assert axial.ConvolutionKernel == "H31s"
    assert axial.SeriesDescription == "Head  5.0  H31s"
    assert float(axial.RescaleIntercept) == -1024.0 and axial.PixelRepresentation == 0
    assert axial.BitsStored == 12
    assert "ContrastBolusAgent" not in axial
    for keyword in (
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "KVP",
        "StationName",
        "ManufacturerModelName",
        "WindowCenter",
        "WindowWidth",
        "StudyDescription",
        "FrameOfReferenceUID",
    ):
        assert keyword in axial, keyword
    bone = read_series(study_dir, head_study.series_by_role("bone")[0])[0]
    assert bone.ConvolutionKernel == "H70h"
    assert bone.FrameOfReferenceUID == axial.FrameOfReferenceUID


def test_geometry_slice_order_comes_from_position(head_study: StudyTruth) -> None:
    study_dir = Path(head_study.directory)
    series = head_study.series_by_role("thick")[0]
    datasets = read_series(study_dir, series)
    by_position = sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in by_position])
    assert np.allclose(np.diff(z), float(by_position[0].SpacingBetweenSlices))
    assert np.allclose(np.diff(z), series.spacing_between_slices_mm)
    for ds in datasets:
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.ImagePositionPatient[:2]] == [
            float(v) for v in datasets[0].ImagePositionPatient[:2]
        ]
        assert float(ds.SliceLocation) == pytest.approx(float(ds.ImagePositionPatient[2]))
    # This vendor numbers instances from the top: InstanceNumber runs against z.
    numbers = [int(ds.InstanceNumber) for ds in by_position]
    assert series.reversed_instance_order
    assert numbers == sorted(numbers, reverse=True)


def test_truth_centroid_points_at_blood_in_the_written_pixels(head_study: StudyTruth) -> None:
    study_dir = Path(head_study.directory)
    datasets = read_series(study_dir, head_study.series_by_role("thick")[0])
    hu = volume_hu(datasets)
    (les,) = head_study.lesions
    k, i, j = les.centroid_voxel_zyx
    assert 45.0 < float(np.median(hu[k, i - 1 : i + 2, j - 1 : j + 2])) < 95.0
    ordered = sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
    x0, y0, z = (float(v) for v in ordered[k].ImagePositionPatient)
    dy, dx = (float(v) for v in ordered[k].PixelSpacing)
    assert les.centroid_lps_mm == pytest.approx((x0 + j * dx, y0 + i * dy, z), abs=3.0)


def test_same_seed_same_files(tmp_path: Path) -> None:
    kwargs = {"seed": 4, "hemorrhages": [Hemorrhage("subdural", 15.0)], "matrix": 64}
    a = write_head_ct_study(tmp_path / "a", **kwargs)  # type: ignore[arg-type]
    b = write_head_ct_study(tmp_path / "b", **kwargs)  # type: ignore[arg-type]
    assert a.model_dump(exclude={"directory"}) == b.model_dump(exclude={"directory"})
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.dcm"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.dcm"))
    assert files_a == files_b and files_a
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    c = write_head_ct_study(tmp_path / "c", **{**kwargs, "seed": 5})  # type: ignore[arg-type]
    assert c.study_uid != a.study_uid and c.accession_number != a.accession_number


@pytest.mark.parametrize("vendor", ["ge", "siemens", "philips", "canon"])
def test_vendors_store_pixels_their_way_and_hu_survive(tmp_path: Path, vendor: str) -> None:
    truth = write_head_ct_study(
        tmp_path / vendor,
        seed=8,
        hemorrhages=[Hemorrhage("intraparenchymal", 15.0, "right")],
        matrix=64,
        vendor=vendor,
        with_bone=False,
        with_scout=False,
        with_dose_report=False,
    )
    (series,) = truth.series
    datasets = read_series(tmp_path / vendor, series)
    first = datasets[0]
    assert (
        first.Manufacturer
        == {
            "ge": "GE MEDICAL SYSTEMS",
            "siemens": "SIEMENS",
            "philips": "Philips",
            "canon": "TOSHIBA",
        }[vendor]
    )
    assert (
        first.ConvolutionKernel
        == {"ge": "STANDARD", "siemens": "H31s", "philips": "UB", "canon": "FC21"}[vendor]
    )
    hu = volume_hu(datasets)
    centre = hu[:, 24:40, 24:40]
    assert -100 < float(np.median(centre)) < 100  # brain, whatever the storage
    if vendor == "ge":
        assert first.PixelRepresentation == 1 and first.PixelPaddingValue == -2000
    k, i, j = truth.lesions[0].centroid_voxel_zyx
    assert float(hu[k, i, j]) > 30.0


def test_contrast_study_names_its_agent(tmp_path: Path) -> None:
    truth = write_head_ct_study(tmp_path / "c", seed=3, contrast=True, matrix=64)
    assert truth.kind == "head_ct_contrast" and truth.contrast
    ds = read_series(tmp_path / "c", truth.series_by_role("thick")[0])[0]
    assert ds.ContrastBolusAgent == truth.contrast_agent
    assert ds.ContrastBolusRoute == "IV"


def test_thin_and_thick_protocol(tmp_path: Path) -> None:
    truth = write_head_ct_study(
        tmp_path / "both",
        seed=2,
        protocol="both",
        matrix=48,
        vendor="ge",
        hemorrhages=[Hemorrhage("subdural", 20.0, "left")],
        with_dose_report=False,
    )
    thick = truth.series_by_role("thick")[0]
    thin = truth.series_by_role("thin")[0]
    bone = truth.series_by_role("bone")[0]
    assert thick.n_instances == 36 and thick.slice_thickness_mm == 5.0
    assert thin.n_instances == 288 and thin.slice_thickness_mm == 0.625
    assert bone.n_instances == thin.n_instances
    assert thin.is_reference and truth.reference_series_uid == thin.series_uid
    assert thin.noise_sd_hu is not None and thick.noise_sd_hu is not None
    assert thin.noise_sd_hu > thick.noise_sd_hu
    desc = {s.role: s.description for s in truth.series}
    assert desc["thick"] == "HEAD 5mm STND" and desc["thin"] == "HEAD 0.625mm STND"


@pytest.mark.dcmtk
def test_dcmdump_accepts_the_files(head_study: StudyTruth) -> None:
    if shutil.which("dcmdump") is None:
        pytest.skip("dcmtk's dcmdump is not installed")
    study_dir = Path(head_study.directory)
    for series in head_study.series:
        f = next((study_dir / series.directory).glob("*.dcm"))
        out = subprocess.run(["dcmdump", "-E", str(f)], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        assert head_study.study_uid in out.stdout
        assert "E:" not in out.stderr


@pytest.fixture(scope="module")
def chest_study(tmp_path_factory: pytest.TempPathFactory) -> StudyTruth:
    return write_chest_ct_study(
        tmp_path_factory.mktemp("chest") / "study",
        seed=5,
        nodules=[Nodule("solid", 12.0, "RLL"), Nodule("ground-glass", 15.0, "LUL")],
        matrix=128,
        slice_mm=2.5,
        n_slices=120,
        vendor="philips",
        with_dose_report=False,
    )


def test_chest_study(chest_study: StudyTruth) -> None:
    study_dir = Path(chest_study.directory)
    assert [s.role for s in chest_study.series] == ["scout", "axial", "lung"]
    axial = chest_study.series_by_role("axial")[0]
    assert axial.is_reference and axial.n_instances == 120
    lung = read_series(study_dir, chest_study.series_by_role("lung")[0])[0]
    assert lung.ConvolutionKernel == "L"
    solid, ggn = chest_study.lesions
    assert (solid.lobe, ggn.lobe) == ("RLL", "LUL")
    assert solid.volume_ml == pytest.approx(Nodule("solid", 12.0).volume_ml, rel=0.15)
    hu = volume_hu(read_series(study_dir, axial))
    k, i, j = solid.centroid_voxel_zyx
    assert float(hu[k, i, j]) > -300  # solid tissue in the lung
    k, i, j = ggn.centroid_voxel_zyx
    assert -800 < float(hu[k, i, j]) < -300  # ground glass


def test_patient_history_priors_grow_into_the_current(tmp_path: Path) -> None:
    patient = PatientSpec(
        patient_id="HX123", name="GROVE^ANNA", birth_date=date(1950, 3, 4), sex="F"
    )
    truths = write_patient_history(
        tmp_path,
        seed=13,
        nodules=[Nodule("solid", 12.0, "RUL")],
        n_priors=2,
        interval_days=180,
        doubling_time_days=150,
        matrix=96,
        slice_mm=2.5,
        n_slices=130,
        patient=patient,
        current_date=date(2025, 6, 1),
    )
    assert len(truths) == 3
    dates = [t.study_date for t in truths]
    assert dates == ["2024-06-06", "2024-12-03", "2025-06-01"]
    assert {t.patient_id for t in truths} == {"HX123"}
    assert len({t.study_uid for t in truths}) == 3
    assert len({t.accession_number for t in truths}) == 3
    assert truths[-1].prior_study_uids == [truths[0].study_uid, truths[1].study_uid]
    volumes = [t.lesions[0].volume_ml for t in truths]
    assert volumes[0] < volumes[1] < volumes[2]
    # 180 days at a 150-day doubling time: x 2.3 per interval.
    assert volumes[2] / volumes[1] == pytest.approx(2 ** (180 / 150), rel=0.2)
    centres = np.array([t.lesions[0].centroid_lps_mm for t in truths])
    assert np.abs(centres - centres[-1]).max() < 3.0
    assert {t.lesions[0].tracking_id for t in truths} == {"N1"}
    for t in truths:
        ds = pydicom.dcmread(
            next((Path(t.directory) / t.series_by_role("axial")[0].directory).glob("*.dcm"))
        )
        assert ds.PatientID == "HX123" and ds.StudyDate == t.study_date.replace("-", "")


def test_stable_nodule_keeps_its_size(tmp_path: Path) -> None:
    truths = write_patient_history(
        tmp_path,
        seed=14,
        nodules=[Nodule("part-solid", 14.0)],
        n_priors=1,
        interval_days=365,
        doubling_time_days=None,
        matrix=96,
        slice_mm=2.5,
        n_slices=130,
    )
    before, now = (t.lesions[0] for t in truths)
    assert before.volume_ml == pytest.approx(now.volume_ml, rel=0.05)
    assert before.lobe == now.lobe
    assert truths[0].study_date < truths[1].study_date


@pytest.mark.parametrize(
    ("modality", "sop_class"),
    [
        ("MR", "1.2.840.10008.5.1.4.1.1.4"),
        ("CR", "1.2.840.10008.5.1.4.1.1.1"),
    ],
)
def test_non_ct_study_has_another_modality(tmp_path: Path, modality: str, sop_class: str) -> None:
    truth = write_non_ct_study(tmp_path, seed=1, modality=modality, matrix=64)
    assert truth.modality == modality and truth.lesions == []
    for series in truth.series:
        for ds in read_series(tmp_path, series):
            assert ds.Modality == modality
            assert ds.SOPClassUID == sop_class
            assert ds.pixel_array.max() > 0


def test_small_subdurals_are_drawn_thick_enough_for_the_pixels_to_show(tmp_path: Path) -> None:
    """A 1 mL subdural keeps a crescent 3-4 mm deep over a smaller arc, so a good part of
    it is at blood density after the scanner's blur (drawn as a 1-voxel sliver against
    the inner table it showed none: every voxel mixed with bone). The same volume deep in
    the brain is shown whole."""
    shown = {}
    for subtype in ("subdural", "intraparenchymal"):
        truth = write_head_ct_study(
            tmp_path / subtype,
            seed=3,
            hemorrhages=[Hemorrhage(subtype=subtype, volume_ml=1.0, side="left")],
            protocol="thick",
            matrix=256,  # a head CT's pixel (~0.9 mm): what the visibility figure is about
            with_scout=False,
            with_bone=False,
            with_dose_report=False,
        )
        (lesion,) = truth.lesions
        assert lesion.visible_ml is not None
        assert 0.0 <= lesion.visible_ml <= lesion.volume_ml + 0.001  # both rounded
        shown[subtype] = lesion.visible_ml / lesion.volume_ml
    assert shown["subdural"] > 0.3
    assert shown["intraparenchymal"] > 0.9


def test_visible_volume_counts_only_voxels_the_image_shows_at_blood_density(
    tmp_path: Path,
) -> None:
    truth = write_head_ct_study(
        tmp_path,
        seed=3,
        hemorrhages=[Hemorrhage(subtype="intraparenchymal", volume_ml=1.0, side="left")],
        protocol="thick",
        matrix=64,
        with_scout=False,
        with_bone=False,
        with_dose_report=False,
    )
    (lesion,) = truth.lesions
    labels = np.zeros((6, 20, 20), dtype=np.int16)
    labels[2:4, 5:15, 5:15] = lesion.label  # 200 voxels
    for raw_hu, expected_ml in ((1500.0, 0.0), (65.0, 0.2)):  # bone; blood
        raw = np.full(labels.shape, raw_hu, dtype=np.float32)
        (measured,) = with_visible_volume([lesion], raw, labels, voxel_ml=0.001)
        assert measured.visible_ml == pytest.approx(expected_ml)
