"""DICOM series -> HU volume: slice order, pixel representations, refused geometries."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from models.volume import load_volume
from pacsflow.errors import NotAnalysableError

ROWS = COLS = 8


def _slice(
    z: float,
    pixels: np.ndarray,
    *,
    instance: int,
    x: float = 0.0,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [x, -50.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.75]  # row spacing (y), column spacing (x)
    ds.SliceThickness = 5.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = pixels.tobytes()
    return ds


def _series(
    zs: list[float], *, dtype: type = np.int16, intercept: float = 0.0, slope: float = 1.0
) -> list[pydicom.Dataset]:
    """Slice k holds stored value (10 * k + 100) everywhere; InstanceNumber runs backwards."""
    out = []
    for k, z in enumerate(zs):
        pixels = np.full((ROWS, COLS), 10 * k + 100, dtype=dtype)
        out.append(_slice(z, pixels, instance=len(zs) - k, slope=slope, intercept=intercept))
    return out


def test_slices_are_ordered_by_position_not_instance_number() -> None:
    series = _series([0.0, 5.0, 10.0, 15.0])
    shuffled = [series[2], series[0], series[3], series[1]]
    volume = load_volume(shuffled)
    assert volume.hu.shape == (4, ROWS, COLS)
    assert [float(volume.hu[k, 0, 0]) for k in range(4)] == [100.0, 110.0, 120.0, 130.0]
    assert volume.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in series)
    assert volume.spacing_zyx == pytest.approx((5.0, 0.5, 0.75))
    # Voxel (k, i, j) -> LPS: x grows with the column, y with the row, z with the slice.
    assert volume.to_lps(np.array([2.0, 4.0, 2.0])) == pytest.approx([1.5, -48.0, 10.0])


def test_signed_pixels_with_rescale_give_hu() -> None:
    series = _series([0.0, 2.5], dtype=np.int16, intercept=-1024.0)
    series[1].PixelData = np.full((ROWS, COLS), -2000, dtype=np.int16).tobytes()
    hu = load_volume(series).hu
    assert float(hu[0, 0, 0]) == 100.0 - 1024.0
    assert float(hu[1, 0, 0]) == -2000.0 - 1024.0


def test_unsigned_pixels_with_slope_and_intercept_give_hu() -> None:
    series = _series([0.0, 2.5], dtype=np.uint16, intercept=-1024.0, slope=0.5)
    series[1].PixelData = np.full((ROWS, COLS), 60000, dtype=np.uint16).tobytes()
    hu = load_volume(series).hu
    assert float(hu[0, 0, 0]) == 100 * 0.5 - 1024.0
    assert float(hu[1, 0, 0]) == 60000 * 0.5 - 1024.0  # not wrapped to a negative value


def test_gantry_tilt_is_refused_with_a_reason() -> None:
    series = _series([0.0, 5.0, 10.0])
    for k, ds in enumerate(series):  # each slice shifted along y: a tilted stack
        ds.ImagePositionPatient = [0.0, -50.0 + 1.5 * k, 5.0 * k]
    with pytest.raises(NotAnalysableError) as info:
        load_volume(series)
    assert any("gantry" in reason for reason in info.value.reasons)


def test_missing_slice_is_refused() -> None:
    with pytest.raises(NotAnalysableError, match="not uniform"):
        load_volume(_series([0.0, 5.0, 10.0, 20.0]))


def test_duplicate_position_is_refused() -> None:
    with pytest.raises(NotAnalysableError, match="share one position"):
        load_volume(_series([0.0, 5.0, 5.0]))


def test_missing_geometry_is_refused() -> None:
    series = _series([0.0, 5.0])
    del series[1].ImageOrientationPatient
    with pytest.raises(NotAnalysableError, match="ImageOrientationPatient"):
        load_volume(series)


def test_pixel_padding_value_reads_as_air() -> None:
    series = _series([0.0, 5.0], dtype=np.int16, intercept=-1024.0)
    pixels = np.full((ROWS, COLS), 1064, dtype=np.int16)  # 40 HU
    pixels[0, :3] = -2000  # outside the reconstruction circle
    for ds in series:
        ds.PixelData = pixels.tobytes()
        ds.PixelPaddingValue = -2000
    hu = load_volume(series).hu
    assert float(hu[0, 0, 0]) == -1024.0
    assert float(hu[0, 5, 5]) == 40.0
