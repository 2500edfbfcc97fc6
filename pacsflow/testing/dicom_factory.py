"""Tiny, valid CT objects for protocol tests (and deliberately broken ones).

Realistic studies come from `pacsflow synth`; these are the smallest objects that exercise
the DICOM listener: a few 16x16 slices, generated in milliseconds. Plus the small synthetic
head CT that bursts of many studies are made of.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pacsflow.synth.phantoms import Hemorrhage
from pacsflow.synth.studies import write_head_ct_study
from pacsflow.synth.truth import StudyTruth


def tiny_ct(
    *,
    study_uid: str,
    series_uid: str,
    index: int,
    rows: int = 16,
    patient_id: str = "TEST-0001",
    accession: str = "ACC-TEST",
    sop_class_uid: str = CTImageStorage,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.PatientName = "Test^Tiny"
    ds.AccessionNumber = accession
    ds.StudyDate = "20261101"
    ds.SeriesDescription = "HEAD 5mm"
    ds.BodyPartExamined = "HEAD"
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0.0, 0.0, 5.0 * index]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 5.0
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.PixelData = (np.full((rows, rows), 40, dtype=np.int16)).tobytes()
    return ds


def write_tiny_study(out_dir: Path, slices: int = 3, **kwargs: str) -> tuple[str, list[Path]]:
    """A one-series CT study as files; returns (study UID, paths)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    paths = []
    for i in range(slices):
        ds = tiny_ct(study_uid=study_uid, series_uid=series_uid, index=i, **kwargs)
        path = out_dir / f"{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study_uid, paths


def write_burst_head_ct(out_dir: Path, seed: int) -> StudyTruth:
    """A small but analysable head CT for bursts (reliability tests, scale bench): 256
    matrix (0.7-0.9 mm pixels), 12 slices of 5 mm, one series; every third seed bleeds."""
    bleeds = (
        (Hemorrhage(subtype="intraparenchymal", volume_ml=25.0, side="left"),)
        if seed % 3 == 0
        else ()
    )
    return write_head_ct_study(
        out_dir,
        seed=seed,
        hemorrhages=bleeds,
        matrix=256,
        coverage_mm=60.0,
        with_scout=False,
        with_bone=False,
        with_dose_report=False,
    )
