"""Phantoms of pacsflow.synth: determinism, lesion size and place, tissue densities."""

from __future__ import annotations

import numpy as np
import pytest

from pacsflow.errors import InvalidInputError
from pacsflow.synth.phantoms import (
    Grid,
    Hemorrhage,
    Nodule,
    chest_phantom,
    gaussian_noise,
    head_phantom,
    random_hemorrhage,
    random_nodule,
)


def head_grid(matrix: int = 128) -> Grid:
    return Grid.axial(matrix=matrix, fov_mm=250.0, n_slices=36, slice_mm=5.0)


def chest_grid() -> Grid:
    return Grid.axial(
        matrix=128, fov_mm=380.0, n_slices=120, slice_mm=2.5, center_lps_mm=(0, 0, -150)
    )


def test_same_seed_same_volume_other_seed_other_volume() -> None:
    hem = [Hemorrhage("subdural", 30.0, "left")]
    a = head_phantom(head_grid(), hem, np.random.default_rng(5))
    b = head_phantom(head_grid(), hem, np.random.default_rng(5))
    c = head_phantom(head_grid(), hem, np.random.default_rng(6))
    assert np.array_equal(a.hu, b.hu)
    assert np.array_equal(a.labels, b.labels)
    assert a.lesions == b.lesions
    assert not np.array_equal(a.hu, c.hu)


@pytest.mark.parametrize(
    ("subtype", "volume", "region"),
    [
        ("intraparenchymal", 25.0, None),
        ("intraparenchymal", 12.0, "cerebellum"),
        ("subdural", 40.0, None),
        ("epidural", 20.0, "temporal"),
        ("subarachnoid", 6.0, None),
        ("intraventricular", 5.0, None),
    ],
)
@pytest.mark.parametrize("side", ["left", "right"])
def test_hemorrhage_volume_side_and_density(
    subtype: str, volume: float, region: str | None, side: str
) -> None:
    vol = head_phantom(
        head_grid(), [Hemorrhage(subtype, volume, side, region)], np.random.default_rng(11)
    )
    (les,) = vol.lesions
    # Measured on the label mask that was written, close to the target.
    n = int((vol.labels == 1).sum())
    assert les.n_voxels == n
    assert les.volume_ml == pytest.approx(n * vol.grid.voxel_ml, rel=1e-3)
    assert les.volume_ml == pytest.approx(volume, rel=0.15)
    assert les.kind == "hemorrhage" and les.subtype == subtype
    # Acute blood, and on the requested side of the head's own midline.
    assert 55.0 <= les.assigned_hu <= 85.0
    local_x = vol.anatomy.frame.to_local(les.centroid_lps_mm)[0]
    assert local_x > 0 if side == "left" else local_x < 0  # +x is the patient's left (LPS)
    assert les.location.side == side
    k, i, j = les.centroid_voxel_zyx
    assert vol.grid.index_to_lps((k, i, j)) == pytest.approx(les.centroid_lps_mm, abs=5.0)


@pytest.mark.parametrize("subtype", ["intraparenchymal", "intraventricular"])
def test_blood_is_denser_than_brain_in_the_image(subtype: str) -> None:
    vol = head_phantom(
        head_grid(256),
        [Hemorrhage(subtype, 8.0, "right")],
        np.random.default_rng(3),
        noise_hu=5.0,
    )
    (les,) = vol.lesions
    assert les.mean_hu is not None and 50.0 <= les.mean_hu <= 90.0
    brain = vol.anatomy.tissue_hu
    assert les.mean_hu > max(brain[6], brain[7]) + 15  # grey and white matter


def test_regions_are_honoured_and_reported() -> None:
    rng = np.random.default_rng(2)
    hems = [
        Hemorrhage("intraparenchymal", 10.0, "left", "frontal lobe"),
        Hemorrhage("subdural", 20.0, "right", "parietal"),
        Hemorrhage("intraventricular", 3.0, "left"),
    ]
    vol = head_phantom(head_grid(), hems, rng)
    iph, sdh, ivh = vol.lesions
    assert iph.location.region == "frontal lobe"
    assert iph.location.compartment == "supratentorial"
    assert sdh.location.region is not None and sdh.location.region.endswith("convexity")
    assert sdh.max_thickness_mm is not None and sdh.max_thickness_mm > 2.0
    assert ivh.location.region == "lateral ventricle"


def test_subdural_is_a_crescent_and_epidural_a_lens() -> None:
    sdh = head_phantom(head_grid(256), [Hemorrhage("subdural", 40.0)], np.random.default_rng(4))
    edh = head_phantom(head_grid(256), [Hemorrhage("epidural", 40.0)], np.random.default_rng(4))
    s, e = sdh.lesions[0], edh.lesions[0]
    # Same volume: the crescent is long and thin, the lens short and thick.
    assert s.longest_axial_diameter_mm > e.longest_axial_diameter_mm
    assert s.max_thickness_mm is not None and e.max_thickness_mm is not None
    assert s.max_thickness_mm < e.max_thickness_mm


def test_anatomy_densities_and_noise() -> None:
    vol = head_phantom(head_grid(), [], np.random.default_rng(0), noise_hu=8.0)
    corner = vol.hu[:, :8, :8].astype(float)  # air outside the head
    assert corner.mean() == pytest.approx(-1000.0, abs=2.0)
    assert corner.std() == pytest.approx(8.0, rel=0.12)
    assert vol.hu.max() > 900  # skull
    assert vol.labels.max() == 0 and vol.lesions == []


def test_contrast_makes_vessels_bright() -> None:
    plain = head_phantom(head_grid(), [], np.random.default_rng(1), noise_hu=0.0)
    enhanced = head_phantom(head_grid(), [], np.random.default_rng(1), noise_hu=0.0, contrast=True)
    bright = (enhanced.hu > 140) & (enhanced.hu < 320) & (plain.hu < 80) & (plain.hu > 20)
    assert bright.sum() > 50  # sinuses and arteries, soft tissue without contrast


def test_gaussian_noise_is_standard() -> None:
    x = gaussian_noise(np.random.default_rng(0), (200_000,), 3.0)
    assert x.mean() == pytest.approx(0.0, abs=0.05)
    assert x.std() == pytest.approx(3.0, rel=0.02)


def test_nodules_sit_in_their_lobe_with_their_size_and_density() -> None:
    nodules = [
        Nodule("solid", 14.0, "RUL"),
        Nodule("part-solid", 20.0, "LLL", solid_fraction=0.5),
        Nodule("ground-glass", 16.0, "RML"),
    ]
    vol = chest_phantom(chest_grid(), nodules, np.random.default_rng(8), noise_hu=10.0)
    solid, part, ggn = vol.lesions
    for les, nod in zip(vol.lesions, nodules, strict=True):
        assert les.kind == "nodule" and les.subtype == nod.nodule_type
        assert les.lobe == nod.lobe
        assert les.volume_ml == pytest.approx(nod.volume_ml, rel=0.15)
        assert les.mean_diameter_mm == pytest.approx(nod.diameter_mm, rel=0.2)
    assert solid.location.side == "right" and solid.location.region == "right upper lobe"
    assert part.location.side == "left"
    assert solid.mean_hu is not None and solid.mean_hu > -150
    assert ggn.mean_hu is not None and -750 < ggn.mean_hu < -350
    assert part.solid_component_diameter_mm is not None
    assert 0.3 * 20 < part.solid_component_diameter_mm < 0.75 * 20
    assert ggn.solid_component_diameter_mm is None


def test_nodule_at_explicit_centre() -> None:
    grid = chest_grid()
    first = chest_phantom(grid, [Nodule("solid", 10.0, "LUL")], np.random.default_rng(3))
    centre = first.lesions[0].centroid_lps_mm
    again = chest_phantom(
        grid,
        [Nodule("solid", 10.0, center_mm=centre)],
        np.random.default_rng(99),
        anatomy=first.anatomy,
    )
    assert again.lesions[0].centroid_lps_mm == pytest.approx(centre, abs=2.5)
    assert again.lesions[0].lobe == "LUL"
    with pytest.raises(InvalidInputError, match="not inside a lung"):
        chest_phantom(
            grid,
            [Nodule("solid", 10.0, center_mm=(500.0, 0.0, 0.0))],
            np.random.default_rng(0),
            anatomy=first.anatomy,
        )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Hemorrhage("bleed", 10.0), "unknown hemorrhage subtype"),
        (lambda: Hemorrhage("subdural", 10.0, "up"), "side"),
        (lambda: Hemorrhage("intraventricular", 10.0, "left", "frontal"), "not available"),
        (lambda: Hemorrhage("subdural", 0.0), "volume"),
        (lambda: Nodule("calcified", 8.0), "unknown nodule type"),
        (lambda: Nodule("solid", 80.0), "diameter"),
        (lambda: Nodule("solid", 8.0, "RXL"), "unknown lobe"),
    ],
)
def test_specs_refuse_bad_values(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError, match=message):
        make()


def test_specs_normalise_aliases() -> None:
    h = Hemorrhage("SDH", 10.0, "Left", "Frontal Lobe")
    assert (h.subtype, h.side, h.region) == ("subdural", "left", "frontal")
    n = Nodule("GGO", 8.0, "right upper lobe")
    assert (n.nodule_type, n.lobe) == ("ground-glass", "RUL")


def test_grid_maps_voxels_to_patient_coordinates() -> None:
    g = Grid.axial(matrix=64, fov_mm=256.0, n_slices=10, slice_mm=5.0, center_lps_mm=(1, 2, 3))
    assert g.spacing_zyx_mm == (5.0, 4.0, 4.0)
    assert g.slice_position(0) == (1 - 126.0, 2 - 126.0, 3 - 22.5)
    lps = g.index_to_lps((2, 10, 20))
    assert lps == (1 - 126.0 + 80.0, 2 - 126.0 + 40.0, 3 - 22.5 + 10.0)
    assert g.lps_to_index(lps) == pytest.approx((2, 10, 20))


def test_random_lesions_render_for_training() -> None:
    rng = np.random.default_rng(17)
    hems = [random_hemorrhage(rng) for _ in range(3)]
    assert all(2.0 <= h.volume_ml <= 60.0 for h in hems)
    vol = head_phantom(head_grid(96), hems, rng)
    assert len(vol.lesions) == 3 and set(np.unique(vol.labels)) <= {0, 1, 2, 3}
    nods = [random_nodule(rng, types=("solid",), diameter_range_mm=(8.0, 12.0))]
    assert nods[0].nodule_type == "solid" and 8.0 <= nods[0].diameter_mm <= 12.0
    assert chest_phantom(chest_grid(), nods, rng).lesions[0].kind == "nodule"
