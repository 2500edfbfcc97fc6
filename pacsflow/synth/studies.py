"""Write synthetic studies as DICOM folders with ground truth beside them.

Layout: out_dir/<NNN>_<role>/<InstanceNumber:04d>.dcm per series and out_dir/ground_truth.json.
Everything is decided by `seed` (numpy SeedSequence streams for identities, anatomy and
noise), so the same call writes byte-identical pixels and the same UIDs.

    truth = write_head_ct_study(Path("out/sdh"), seed=7,
                                hemorrhages=[Hemorrhage("subdural", 30.0, "left")])
    truth.lesions[0].volume_ml, truth.series_by_role("thick")[0].series_uid
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from pacsflow.errors import InvalidInputError
from pacsflow.synth import _dicom, _head
from pacsflow.synth._chest import ChestModel, place_nodule
from pacsflow.synth._dicom import AxialSeries, StudyContext, uid
from pacsflow.synth._render import render
from pacsflow.synth.grid import Grid
from pacsflow.synth.patients import PatientSpec, random_patient
from pacsflow.synth.phantoms import (
    ChestAnatomy,
    RenderedPhantom,
    draw_chest_anatomy,
    finish_hu,
    render_chest,
    render_head,
    sharp_kernel,
    soft_kernel,
    soft_kernel_float,
    with_mean_hu,
    with_visible_volume,
)
from pacsflow.synth.specs import Hemorrhage, Nodule
from pacsflow.synth.truth import (
    TRUTH_FILENAME,
    LesionTruth,
    SeriesTruth,
    StudyTruth,
    load_truth,
)
from pacsflow.synth.vendors import PROFILES, VENDORS, VendorProfile, vendor_profile

__all__ = [
    "PatientSpec",
    "StudyTruth",
    "load_truth",
    "write_chest_ct_study",
    "write_head_ct_study",
    "write_non_ct_study",
    "write_patient_history",
]

log = logging.getLogger(__name__)

HEAD_THICK_MM = 5.0
_KIND_CODES = {"head_ct": 1, "chest_ct": 2, "mr_brain": 3, "cr_chest": 4}
_CONTRAST_AGENTS = ("OMNIPAQUE 350", "Iopamidol 370", "ULTRAVIST 370", "VISIPAQUE 320")


class _Streams:
    """Independent random streams of one study: identities, anatomy + lesions, noise."""

    def __init__(self, seed: int, kind: str) -> None:
        if seed < 0:
            raise InvalidInputError(f"seed must be >= 0, got {seed}")
        ss = np.random.SeedSequence([seed, _KIND_CODES[kind]])
        meta, phantom, noise = ss.spawn(3)
        self.meta = np.random.default_rng(meta)
        self.phantom = np.random.default_rng(phantom)
        self.noise = np.random.default_rng(noise)


def _pick_vendor(vendor: str | None, rng: np.random.Generator) -> VendorProfile:
    key = VENDORS[int(rng.integers(len(VENDORS)))]
    return vendor_profile(vendor) if vendor is not None else PROFILES[key]


def _context(
    *,
    seed: int,
    kind: str,
    rng: np.random.Generator,
    vendor: VendorProfile,
    patient: PatientSpec | None,
    study_date: date | None,
    description: str,
    body_part: str | None,
    modality: str = "CT",
    contrast_agent: str | None = None,
    ctdi_vol: float = 50.0,
    model_name: str | None = None,
) -> StudyContext:
    p = patient if patient is not None else random_patient(rng)
    d = (
        study_date
        if study_date is not None
        else date(2024, 1, 1) + timedelta(days=int(rng.integers(0, 700)))
    )
    seconds = int(rng.integers(7 * 3600, 22 * 3600))
    study_time = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
    accession = f"A{int(rng.integers(10_000_000, 100_000_000))}"
    # As in life, some sites leave BodyPartExamined empty.
    if rng.random() < 0.15:
        body_part = None
    parts = (str(seed), kind, accession)
    return StudyContext(
        study_uid=uid(*parts, "study"),
        accession_number=accession,
        study_id=str(int(rng.integers(1, 99_999))),
        patient_id=p.patient_id,
        patient_name=p.name,
        patient_birth_date=p.birth_date,
        patient_sex=p.sex,
        study_date=d,
        study_time=study_time,
        study_description=description,
        vendor=vendor,
        model_name=model_name or str(rng.choice(vendor.models)),
        station_name=f"{vendor.station_prefix}{int(rng.integers(1, 9)):02d}",
        device_serial=str(int(rng.integers(10_000, 99_999))),
        institution="PACSFLOW SYNTHETIC HOSPITAL",
        body_part=body_part,
        frame_of_reference_uid=uid(*parts, "for"),
        modality=modality,
        contrast_agent=contrast_agent,
        ctdi_vol=ctdi_vol,
        seed=seed,
        uid_parts=parts,
    )


def _truth(
    ctx: StudyContext,
    *,
    kind: str,
    out_dir: Path,
    series: list[SeriesTruth],
    lesions: list[LesionTruth],
    contrast: bool = False,
    protocol: str | None = None,
    noise_hu: float | None = None,
    prior_study_uids: Sequence[str] = (),
    doubling_time_days: float | None = None,
) -> StudyTruth:
    ref = next((s.series_uid for s in series if s.is_reference), None)
    truth = StudyTruth(
        kind=kind,
        seed=ctx.seed,
        study_uid=ctx.study_uid,
        accession_number=ctx.accession_number,
        patient_id=ctx.patient_id,
        patient_name=ctx.patient_name,
        patient_birth_date=ctx.patient_birth_date.isoformat(),
        patient_sex=ctx.patient_sex,
        study_date=ctx.study_date.isoformat(),
        study_time=ctx.study_time,
        study_description=ctx.study_description,
        modality=ctx.modality,
        vendor=ctx.vendor.key,
        manufacturer=ctx.vendor.manufacturer,
        manufacturer_model_name=ctx.model_name,
        body_part_examined=ctx.body_part,
        contrast=contrast,
        contrast_agent=ctx.contrast_agent,
        protocol=protocol,
        noise_hu=None if noise_hu is None else round(noise_hu, 3),
        series=sorted(series, key=lambda s: s.series_number),
        reference_series_uid=ref,
        lesions=lesions,
        prior_study_uids=list(prior_study_uids),
        doubling_time_days=doubling_time_days,
        directory=str(out_dir.resolve()),
    )
    truth.write(out_dir / TRUTH_FILENAME)
    log.info(
        "wrote %s study %s (accession %s) to %s",
        kind,
        ctx.study_uid,
        ctx.accession_number,
        out_dir,
    )
    return truth


def _dose_lines(
    ctx: StudyContext, series: list[SeriesTruth], length_cm: float, phantom: str
) -> list[str]:
    dlp = ctx.ctdi_vol * length_cm
    lines = [
        f"{ctx.vendor.dose}",
        f"Patient ID: {ctx.patient_id}   Accession: {ctx.accession_number}",
        f"Exam date: {ctx.study_date.isoformat()}   {ctx.model_name}",
        "",
        "Series  Type     Scan Range      CTDIvol(mGy)  DLP(mGy-cm)  Phantom",
    ]
    for s in series:
        if s.role in ("thick", "thin", "axial"):
            lines.append(
                f"{s.series_number:<7} Helical  {length_cm * 10:.0f} mm        "
                f"{ctx.ctdi_vol:8.2f}     {dlp:9.2f}    {phantom}"
            )
    lines += ["", f"Total Exam DLP: {dlp:.2f} mGy-cm"]
    return lines


def thick_from_thin(thin: np.ndarray, thin_grid: Grid, thick_grid: Grid) -> np.ndarray:
    """Average thin slices into thick slabs by overlap (what a scanner's MPR does)."""
    t = thin_grid.spacing_zyx_mm[0]
    T = thick_grid.spacing_zyx_mm[0]
    zt = thin_grid.z_mm()
    zk = thick_grid.z_mm()
    lo = np.maximum((zk - T / 2)[:, None], (zt - t / 2)[None, :])
    hi = np.minimum((zk + T / 2)[:, None], (zt + t / 2)[None, :])
    w = np.clip(hi - lo, 0.0, None)
    w /= w.sum(axis=1, keepdims=True)
    out = np.tensordot(w.astype(np.float32), thin, axes=(1, 0))
    return out.astype(np.float32, copy=False)


# ---- head CT --------------------------------------------------------------------------------


def write_head_ct_study(
    out_dir: Path,
    *,
    seed: int,
    hemorrhages: Sequence[Hemorrhage] = (),
    contrast: bool = False,
    protocol: str = "thick",
    matrix: int = 512,
    vendor: str | None = None,
    noise_hu: float | None = None,
    patient: PatientSpec | None = None,
    study_date: date | None = None,
    with_scout: bool = True,
    with_bone: bool = True,
    with_dose_report: bool | None = None,
    coverage_mm: float = 180.0,
    anatomy_jitter: bool = True,
) -> StudyTruth:
    """A head CT: scout, 5 mm and/or thin brain-kernel axials, a bone-kernel series.

    protocol: "thick" (5 mm, 36 slices over 180 mm), "thin" (the vendor's 0.5-0.9 mm) or
    "both" (thin, plus 5 mm slabs averaged from it). noise_hu is the noise SD of a 5 mm
    soft-tissue image (None: 4-8 HU by seed); thin images are noisier by sqrt(5 / t).
    Lesions are measured on the reference series: the thin one when written, else the thick.
    """
    if protocol not in ("thick", "thin", "both"):
        raise InvalidInputError(f"protocol must be thick, thin or both, got {protocol!r}")
    out_dir = Path(out_dir)
    st = _Streams(seed, "head_ct")
    prof = _pick_vendor(vendor, st.meta)
    noise = float(noise_hu) if noise_hu is not None else float(st.meta.uniform(4.0, 8.0))
    agent = str(st.meta.choice(_CONTRAST_AGENTS)) if contrast else None
    ctx = _context(
        seed=seed,
        kind="head_ct",
        rng=st.meta,
        vendor=prof,
        patient=patient,
        study_date=study_date,
        description=prof.study_description("head", contrast),
        body_part=prof.body_part_head,
        contrast_agent=agent,
        ctdi_vol=float(st.meta.uniform(40.0, 60.0)),
    )
    dose = with_dose_report if with_dose_report is not None else bool(st.meta.random() < 0.5)
    center = (
        float(st.meta.uniform(-5, 5)),
        float(st.meta.uniform(-20, 10)),
        float(st.meta.uniform(-300, 100)),
    )
    start = center[2] - coverage_mm / 2
    n_thick = max(1, round(coverage_mm / HEAD_THICK_MM))
    base = Grid.axial(
        matrix=matrix, fov_mm=prof.head_fov_mm, n_slices=1, slice_mm=1.0, center_lps_mm=center
    )
    thick_grid = base.with_slices(n_thick, HEAD_THICK_MM, start + HEAD_THICK_MM / 2)
    t = prof.thin_head_mm
    thin_grid = base.with_slices(max(1, round(coverage_mm / t)), t, start + t / 2)
    ref_grid = thick_grid if protocol == "thick" else thin_grid
    ref_noise = noise if protocol == "thick" else noise * math.sqrt(HEAD_THICK_MM / t)

    ph = render_head(
        ref_grid, hemorrhages, st.phantom, contrast=contrast, anatomy_jitter=anatomy_jitter
    )
    recons: list[AxialSeries] = []
    number = 2 if with_scout else 1
    soft_ref: np.ndarray
    if protocol == "thick":
        soft_ref = soft_kernel(ph.raw, ref_noise, st.noise)
        recons.append(_head_axial(prof, number, "thick", soft_ref, thick_grid, noise, True))
        number += 1
    else:
        thin_f = soft_kernel_float(ph.raw, ref_noise, st.noise)
        thick_hu = thick_from_thin(thin_f, thin_grid, thick_grid) if protocol == "both" else None
        soft_ref = finish_hu(thin_f)
        if thick_hu is not None:
            thick_noise = ref_noise / math.sqrt(HEAD_THICK_MM / t)
            recons.append(
                _head_axial(
                    prof, number, "thick", finish_hu(thick_hu), thick_grid, thick_noise, False
                )
            )
            number += 1
        recons.append(_head_axial(prof, number, "thin", soft_ref, thin_grid, ref_noise, True))
        number += 1
    if with_bone:
        bone = sharp_kernel(ph.raw, ref_noise, st.noise)
        th = ref_grid.spacing_zyx_mm[0]
        recons.append(
            AxialSeries(
                series_number=number,
                role="bone",
                description=prof.series_description("head", "bone", th),
                kernel=prof.kernel("head", "bone"),
                hu=bone,
                grid=ref_grid,
                slice_thickness_mm=th,
                window_center=[500.0],
                window_width=[2500.0],
                window_explanation=["BONE"],
                noise_sd_hu=ref_noise * 2.5,
                seconds_after_start=45.0,
            )
        )
    lesions = with_mean_hu(ph.lesions, soft_ref, ph.labels)
    voxel_ml = float(np.prod(ref_grid.spacing_zyx_mm)) / 1000.0
    lesions = with_visible_volume(lesions, ph.raw, ph.labels, voxel_ml)
    series = _write_ct(out_dir, ctx, ph, recons, with_scout, lateral=True)
    if dose:
        series.append(
            _dicom.write_dose_screen(
                out_dir,
                ctx,
                _dose_lines(ctx, series, coverage_mm / 10.0, "Head 16"),
                size=min(matrix, 512),
            )
        )
    return _truth(
        ctx,
        kind="head_ct_contrast" if contrast else "head_ct",
        out_dir=out_dir,
        series=series,
        lesions=lesions,
        contrast=contrast,
        protocol=protocol,
        noise_hu=noise,
    )


def _head_axial(
    prof: VendorProfile,
    number: int,
    role: str,
    hu: np.ndarray,
    grid: Grid,
    noise: float,
    reference: bool,
) -> AxialSeries:
    th = grid.spacing_zyx_mm[0]
    multi = prof.key in ("siemens", "philips")
    return AxialSeries(
        series_number=number,
        role=role,
        description=prof.series_description("head", role, th),
        kernel=prof.kernel("head", role),
        hu=hu,
        grid=grid,
        slice_thickness_mm=th,
        window_center=[40.0, 600.0] if multi else [40.0],
        window_width=[80.0, 2800.0] if multi else [80.0],
        window_explanation=["BRAIN", "BONE"] if multi else ["BRAIN"],
        noise_sd_hu=noise,
        is_reference=reference,
        seconds_after_start=30.0 + number,
    )


def _write_ct(
    out_dir: Path,
    ctx: StudyContext,
    ph: RenderedPhantom,
    recons: list[AxialSeries],
    with_scout: bool,
    *,
    lateral: bool,
) -> list[SeriesTruth]:
    out_dir.mkdir(parents=True, exist_ok=True)
    series: list[SeriesTruth] = []
    if with_scout:
        series.append(_dicom.write_localizer(out_dir, ctx, ph.raw, ph.grid, lateral=lateral))
    for r in recons:
        series.append(_dicom.write_axial_series(out_dir, ctx, r))
    return series


# ---- chest CT -------------------------------------------------------------------------------


def _chest_grid(
    prof: VendorProfile,
    matrix: int,
    slice_mm: float,
    n_slices: int | None,
    coverage_mm: float,
    center: tuple[float, float, float],
) -> Grid:
    n = n_slices if n_slices is not None else max(1, round(coverage_mm / slice_mm))
    return Grid.axial(
        matrix=matrix, fov_mm=prof.chest_fov_mm, n_slices=n, slice_mm=slice_mm, center_lps_mm=center
    )


def write_chest_ct_study(
    out_dir: Path,
    *,
    seed: int,
    nodules: Sequence[Nodule] = (),
    matrix: int = 512,
    slice_mm: float = 1.25,
    n_slices: int | None = None,
    vendor: str | None = None,
    noise_hu: float | None = None,
    patient: PatientSpec | None = None,
    study_date: date | None = None,
    with_scout: bool = True,
    with_lung: bool = True,
    with_dose_report: bool | None = None,
    coverage_mm: float = 350.0,
    anatomy: ChestAnatomy | None = None,
    anatomy_jitter: bool = True,
    scan_center_lps_mm: tuple[float, float, float] | None = None,
    tracking_ids: Sequence[str] | None = None,
    prior_study_uids: Sequence[str] = (),
    doubling_time_days: float | None = None,
) -> StudyTruth:
    """A chest CT: scout, soft-tissue axials (reference) and a lung-kernel series.

    n_slices None covers `coverage_mm` (350 mm: 280 slices at 1.25 mm). noise_hu is the
    noise SD of the soft-tissue image (None: 8-15 HU by seed). Give `anatomy` and
    `scan_center_lps_mm` to scan the same patient again (priors, follow-ups).
    """
    out_dir = Path(out_dir)
    st = _Streams(seed, "chest_ct")
    prof = _pick_vendor(vendor, st.meta)
    noise = float(noise_hu) if noise_hu is not None else float(st.meta.uniform(8.0, 15.0))
    ctx = _context(
        seed=seed,
        kind="chest_ct",
        rng=st.meta,
        vendor=prof,
        patient=patient,
        study_date=study_date,
        description=prof.study_description("chest", False),
        body_part=prof.body_part_chest,
        ctdi_vol=float(st.meta.uniform(3.0, 12.0)),
    )
    dose = with_dose_report if with_dose_report is not None else bool(st.meta.random() < 0.5)
    center = scan_center_lps_mm or (
        float(st.meta.uniform(-5, 5)),
        float(st.meta.uniform(-10, 10)),
        float(st.meta.uniform(-400, -100)),
    )
    grid = _chest_grid(prof, matrix, slice_mm, n_slices, coverage_mm, center)
    ph = render_chest(
        grid,
        nodules,
        st.phantom,
        anatomy_jitter=anatomy_jitter,
        anatomy=anatomy,
        tracking_ids=tracking_ids,
    )
    soft = soft_kernel(ph.raw, noise, st.noise)
    recons = [
        AxialSeries(
            series_number=2 if with_scout else 1,
            role="axial",
            description=prof.series_description("chest", "axial", slice_mm),
            kernel=prof.kernel("chest", "axial"),
            hu=soft,
            grid=grid,
            slice_thickness_mm=slice_mm,
            window_center=[40.0],
            window_width=[400.0],
            window_explanation=["MEDIASTINUM"],
            noise_sd_hu=noise,
            is_reference=True,
        )
    ]
    if with_lung:
        recons.append(
            AxialSeries(
                series_number=recons[0].series_number + 1,
                role="lung",
                description=prof.series_description("chest", "lung", slice_mm),
                kernel=prof.kernel("chest", "lung"),
                hu=sharp_kernel(ph.raw, noise, st.noise),
                grid=grid,
                slice_thickness_mm=slice_mm,
                window_center=[-600.0],
                window_width=[1500.0],
                window_explanation=["LUNG"],
                noise_sd_hu=noise * 2.5,
                seconds_after_start=45.0,
            )
        )
    lesions = with_mean_hu(ph.lesions, soft, ph.labels)
    series = _write_ct(out_dir, ctx, ph, recons, with_scout, lateral=False)
    if dose:
        length = grid.nz * grid.spacing_zyx_mm[0] / 10.0
        series.append(
            _dicom.write_dose_screen(
                out_dir, ctx, _dose_lines(ctx, series, length, "Body 32"), size=min(matrix, 512)
            )
        )
    return _truth(
        ctx,
        kind="chest_ct",
        out_dir=out_dir,
        series=series,
        lesions=lesions,
        noise_hu=noise,
        prior_study_uids=prior_study_uids,
        doubling_time_days=doubling_time_days,
    )


def _fix_nodule(model: ChestModel, nod: Nodule, grid: Grid, rng: np.random.Generator) -> Nodule:
    """The nodule with its centre (and solid share) decided once for all the studies."""
    center = nod.center_mm or place_nodule(model, nod, grid, rng).center_lps
    fraction = nod.solid_fraction
    if fraction is None and nod.nodule_type == "part-solid":
        fraction = float(rng.uniform(0.35, 0.65))
    return Nodule(nod.nodule_type, nod.diameter_mm, None, center, fraction)


def write_patient_history(
    out_dir: Path,
    *,
    seed: int,
    nodules: Sequence[Nodule] = (Nodule("solid", 8.0),),
    n_priors: int = 2,
    interval_days: int = 365,
    doubling_time_days: float | None = None,
    matrix: int = 512,
    slice_mm: float = 1.25,
    n_slices: int | None = None,
    vendor: str | None = None,
    patient: PatientSpec | None = None,
    current_date: date | None = None,
    noise_hu: float | None = None,
) -> list[StudyTruth]:
    """Chest CTs of one patient: `n_priors` priors every `interval_days`, then the current.

    Nodules are given at their current size and sit at the same place in every study;
    with a volume doubling time V(t) = V_now * 2 ** (-(days before now) / doubling time),
    so priors are smaller; None keeps them stable. Returns the truths oldest first, each
    written to out_dir/study_<YYYYMMDD>; tracking_id links a nodule across studies.
    """
    if n_priors < 0 or interval_days < 1:
        raise InvalidInputError("n_priors must be >= 0 and interval_days >= 1")
    if doubling_time_days is not None and doubling_time_days <= 0:
        raise InvalidInputError(f"doubling_time_days must be > 0, got {doubling_time_days}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 99]))
    prof = _pick_vendor(vendor, rng)
    pat = patient if patient is not None else random_patient(rng)
    now = current_date or date(2025, 1, 1) + timedelta(days=int(rng.integers(0, 300)))
    center = (
        float(rng.uniform(-5, 5)),
        float(rng.uniform(-10, 10)),
        float(rng.uniform(-400, -100)),
    )
    grid = _chest_grid(prof, matrix, slice_mm, n_slices, 350.0, center)
    anatomy = draw_chest_anatomy(rng, grid)
    model = ChestModel(anatomy)
    placed = [_fix_nodule(model, n, grid, rng) for n in nodules]
    tracking = [f"N{i + 1}" for i in range(len(placed))]
    truths: list[StudyTruth] = []
    for k in range(n_priors, -1, -1):
        days_before = k * interval_days
        factor = (
            1.0 if doubling_time_days is None else 2.0 ** (-days_before / doubling_time_days / 3.0)
        )
        at_date = [
            Nodule(
                n.nodule_type, max(n.diameter_mm * factor, 1.0), None, n.center_mm, n.solid_fraction
            )
            for n in placed
        ]
        d = now - timedelta(days=days_before)
        truths.append(
            write_chest_ct_study(
                out_dir / f"study_{d:%Y%m%d}",
                seed=int(np.random.SeedSequence([seed, 99, k]).generate_state(1)[0]),
                nodules=at_date,
                matrix=matrix,
                slice_mm=slice_mm,
                n_slices=n_slices,
                vendor=prof.key,
                noise_hu=noise_hu,
                patient=pat,
                study_date=d,
                anatomy=anatomy,
                scan_center_lps_mm=center,
                tracking_ids=tracking,
                prior_study_uids=[t.study_uid for t in truths],
                doubling_time_days=doubling_time_days,
            )
        )
    return truths


# ---- studies out of scope for the CT pathways -----------------------------------------------

_NON_CT_VENDORS = (
    ("siemens", "SIEMENS", ("MAGNETOM Skyra", "MAGNETOM Aera"), ("Ysio Max",)),
    ("ge", "GE MEDICAL SYSTEMS", ("SIGNA Premier", "SIGNA Artist"), ("Definium 656",)),
    ("philips", "Philips", ("Ingenia", "Achieva"), ("DigitalDiagnost",)),
)
# Relative signal of each head tissue class on T1, T2 and FLAIR images.
_MR_SIGNAL = {
    "t1": {
        _head.CSF: 250,
        _head.VENTRICLE: 240,
        _head.GM: 620,
        _head.WM: 820,
        _head.DEEP_GM: 650,
        _head.CEREBELLUM: 640,
        _head.BRAINSTEM: 760,
        _head.FAT: 1100,
        _head.SKIN: 700,
        _head.DIPLOE: 950,
        _head.ORBIT_FAT: 1100,
        _head.GLOBE: 200,
        _head.SOFT: 600,
        _head.VENOUS: 300,
        _head.ARTERY: 80,
        _head.DURA: 300,
        _head.MASTOID: 60,
    },
    "t2": {
        _head.CSF: 1900,
        _head.VENTRICLE: 1900,
        _head.GM: 950,
        _head.WM: 700,
        _head.DEEP_GM: 880,
        _head.CEREBELLUM: 930,
        _head.BRAINSTEM: 760,
        _head.FAT: 800,
        _head.SKIN: 600,
        _head.DIPLOE: 700,
        _head.ORBIT_FAT: 800,
        _head.GLOBE: 1900,
        _head.SOFT: 500,
        _head.VENOUS: 150,
        _head.ARTERY: 60,
        _head.DURA: 200,
        _head.MASTOID: 60,
    },
    "flair": {
        _head.CSF: 120,
        _head.VENTRICLE: 100,
        _head.GM: 900,
        _head.WM: 700,
        _head.DEEP_GM: 860,
        _head.CEREBELLUM: 880,
        _head.BRAINSTEM: 760,
        _head.FAT: 900,
        _head.SKIN: 600,
        _head.DIPLOE: 800,
        _head.ORBIT_FAT: 900,
        _head.GLOBE: 150,
        _head.SOFT: 500,
        _head.VENOUS: 150,
        _head.ARTERY: 60,
        _head.DURA: 250,
        _head.MASTOID: 60,
    },
}


def write_non_ct_study(
    out_dir: Path,
    *,
    seed: int,
    modality: str = "MR",
    matrix: int | None = None,
    patient: PatientSpec | None = None,
    study_date: date | None = None,
) -> StudyTruth:
    """A study the CT pathways must decline: an MR brain (T1, T2, FLAIR) or a CR chest."""
    m = modality.strip().upper()
    if m not in ("MR", "CR"):
        raise InvalidInputError(f"modality must be MR or CR, got {modality!r}")
    out_dir = Path(out_dir)
    kind = "mr_brain" if m == "MR" else "cr_chest"
    st = _Streams(seed, kind)
    key, manufacturer, mr_models, cr_models = _NON_CT_VENDORS[
        int(st.meta.integers(len(_NON_CT_VENDORS)))
    ]
    prof = replace(
        PROFILES[key],
        manufacturer=manufacturer,
        models=mr_models if m == "MR" else cr_models,
        software_versions="synthetic",
    )
    ctx = _context(
        seed=seed,
        kind=kind,
        rng=st.meta,
        vendor=prof,
        patient=patient,
        study_date=study_date,
        description="MR BRAIN WO CONTRAST" if m == "MR" else "XR CHEST PA",
        body_part="BRAIN" if m == "MR" else "CHEST",
        modality=m,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if m == "MR":
        series = _write_mr(out_dir, ctx, st, matrix or 256)
    else:
        series = [_write_cr(out_dir, ctx, st, matrix or 1024)]
    return _truth(ctx, kind=kind, out_dir=out_dir, series=series, lesions=[])


def _write_mr(out_dir: Path, ctx: StudyContext, st: _Streams, matrix: int) -> list[SeriesTruth]:
    grid = Grid.axial(
        matrix=matrix,
        fov_mm=230.0,
        n_slices=24,
        slice_mm=6.0,
        center_lps_mm=(0.0, 0.0, float(st.meta.uniform(-40, 40))),
    )
    an = _head.draw_head_anatomy(st.phantom, grid)
    model = _head.HeadModel(an)
    model.lut = np.arange(_head.N_CLASSES, dtype=np.float32)  # render class codes
    model.background_hu = 0.0
    classes = render(grid, model, []).astype(np.intp)
    classes[classes == _head.HOLDER] = _head.AIR
    field_t = 3.0 if "Skyra" in ctx.model_name or "Premier" in ctx.model_name else 1.5
    seqs = [
        _dicom.MrSequence("t1_se_tra", "SE", "SP", 550.0, 10.0),
        _dicom.MrSequence("t2_tse_tra", "SE", "SK\\SP", 5000.0, 95.0),
        _dicom.MrSequence("t2_tirm_tra_dark-fluid", "SE\\IR", "SK\\SP\\MP", 9000.0, 85.0, 2500.0),
    ]
    series = []
    for number, (seq, key) in enumerate(zip(seqs, ("t1", "t2", "flair"), strict=True), start=2):
        lut = np.zeros(_head.N_CLASSES, dtype=np.float32)
        for code, value in _MR_SIGNAL[key].items():
            lut[code] = value
        img = lut[classes]
        sd = 18.0
        re = img + st.noise.normal(0, sd, img.shape).astype(np.float32)
        im = st.noise.normal(0, sd, img.shape).astype(np.float32)
        mag = np.sqrt(re * re + im * im)  # Rician magnitude noise
        series.append(_dicom.write_mr_series(out_dir, ctx, seq, number, mag, grid, field_t))
    return series


def _write_cr(out_dir: Path, ctx: StudyContext, st: _Streams, matrix: int) -> SeriesTruth:
    from scipy.ndimage import zoom

    grid = Grid.axial(
        matrix=160, fov_mm=400.0, n_slices=100, slice_mm=3.5, center_lps_mm=(0.0, 0.0, -150.0)
    )
    ph = render_chest(grid, [], st.phantom)
    mu = np.clip(ph.raw + 1000.0, 0.0, None) * (0.02 / 1000.0)  # water ~0.02 / mm
    path = mu.sum(axis=1) * grid.spacing_zyx_mm[1]  # (z, x), antero-posterior line integrals
    path = path[::-1]  # superior at the top
    px = 400.0 / matrix
    rows = max(2, round(grid.nz * grid.spacing_zyx_mm[0] / px))
    img = zoom(path, (rows / path.shape[0], matrix / path.shape[1]), order=1)
    img = 200.0 + 3600.0 * img / max(float(img.max()), 1e-6)
    img += st.noise.normal(0, 12.0, img.shape)
    return _dicom.write_cr_image(out_dir, ctx, img, px)
