"""analyse_series wiring: DICOM datasets in, typed result + label map + volume out."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from models.ich.analyse import analyse_series as analyse_head
from models.nodule.analyse import analyse_series as analyse_chest
from models.scoring import operating_probability
from models.segmenter import Segmenter, SegmenterConfig, build_network
from pacsflow.domain import ModelRef
from pacsflow.errors import InvalidInputError, NotAnalysableError


def _segmenter(kind: str) -> Segmenter:
    config = SegmenterConfig(
        kind=kind,
        spacing_zyx=(5.0, 4.0, 4.0),
        windows=((0.0, 100.0),),
        channels=(4, 8),
        strides=(2,),
        num_res_units=0,
        norm="batch",
    )
    torch.manual_seed(0)
    return Segmenter(config, build_network(config))


def _series(n: int = 6, size: int = 32) -> list[pydicom.Dataset]:
    study, series = generate_uid(), generate_uid()
    out = []
    for k in range(n):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [2.0, 2.0]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.full((size, size), 35, dtype=np.int16).tobytes()
        out.append(ds)
    return out


@pytest.mark.parametrize(("kind", "analyse"), [("ich", analyse_head), ("nodule", analyse_chest)])
def test_result_label_map_and_volume(kind: str, analyse) -> None:  # type: ignore[no-untyped-def]
    series = _series()
    ref = ModelRef(name=f"pacsflow-{kind}", version="3", run_id="r1", approved=True)
    result, labels, volume = analyse(list(reversed(series)), _segmenter(kind), ref)
    assert result.study_uid == series[0].StudyInstanceUID
    assert result.series_uid == series[0].SeriesInstanceUID
    assert result.model == ref
    assert 0.0 <= result.study_probability <= 1.0
    assert labels.shape == volume.hu.shape == (6, 32, 32)
    assert labels.max() == len(result.findings)
    assert volume.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in series)


def test_a_model_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="ICH model"):
        analyse_head(_series(), _segmenter("nodule"), ModelRef(name="x", version="1"))


def test_instances_of_two_series_are_refused() -> None:
    mixed = _series()[:3] + _series()[3:]
    with pytest.raises(NotAnalysableError, match="one series"):
        analyse_head(mixed, _segmenter("ich"), ModelRef(name="x", version="1"))


def test_operating_scale_puts_the_operating_point_at_one_half() -> None:
    assert operating_probability(0.8, min_score=0.8) == 0.5
    assert operating_probability(1.0, min_score=0.8) == 1.0
    assert operating_probability(0.79, min_score=0.8) < 0.5
    # Confident but too small: under one half, whatever the score.
    assert operating_probability(0.99, min_score=0.6, size=0.05, min_size=0.1) < 0.5
    assert operating_probability(0.4, min_score=0.5) == pytest.approx(0.4)
