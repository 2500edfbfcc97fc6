"""`pacsflow synth ...`: write synthetic studies with ground truth from the command line.

pacsflow synth head-ct --hemorrhage subdural --out out/sdh
pacsflow synth head-ct --hemorrhage iph:25:left:basal-ganglia --protocol both --out out/iph
pacsflow synth chest-ct --nodule solid:8:RUL --nodule ground-glass:14 --out out/chest
pacsflow synth history --nodule part-solid:12 --priors 2 --doubling-time-days 300 --out out/pt
pacsflow synth non-ct --modality MR --out out/mr
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from pacsflow.errors import InvalidInputError, PacsflowError
from pacsflow.synth.specs import (
    HEMORRHAGE_REGIONS,
    HEMORRHAGE_SUBTYPES,
    LUNG_LOBES,
    NODULE_TYPES,
    Hemorrhage,
    Nodule,
)
from pacsflow.synth.truth import TRUTH_FILENAME, StudyTruth
from pacsflow.synth.vendors import VENDORS

_SIDES = {"l": "left", "left": "left", "r": "right", "right": "right"}


def parse_hemorrhage(text: str, volume_ml: float, side: str, region: str | None) -> Hemorrhage:
    """TYPE[:VOLUME_ML[:SIDE[:REGION]]]; missing parts come from --volume-ml/--side/--region."""
    parts = [p.strip() for p in text.split(":")]
    if not parts[0] or len(parts) > 4:
        raise InvalidInputError(
            f"bad --hemorrhage {text!r}: expected TYPE[:VOLUME_ML[:SIDE[:REGION]]]"
        )
    try:
        vol = float(parts[1]) if len(parts) > 1 and parts[1] else volume_ml
    except ValueError as exc:
        raise InvalidInputError(f"bad volume in --hemorrhage {text!r}") from exc
    s = parts[2].lower() if len(parts) > 2 and parts[2] else side
    if s not in _SIDES:
        raise InvalidInputError(f"bad side in --hemorrhage {text!r}: left or right")
    reg = parts[3] if len(parts) > 3 and parts[3] else region
    return Hemorrhage(parts[0], vol, _SIDES[s], reg)


def parse_nodule(text: str) -> Nodule:
    """TYPE:DIAMETER_MM[:LOBE]."""
    parts = [p.strip() for p in text.split(":")]
    if len(parts) < 2 or len(parts) > 3:
        raise InvalidInputError(f"bad --nodule {text!r}: expected TYPE:DIAMETER_MM[:LOBE]")
    try:
        diameter = float(parts[1])
    except ValueError as exc:
        raise InvalidInputError(f"bad diameter in --nodule {text!r}") from exc
    return Nodule(parts[0], diameter, parts[2] if len(parts) > 2 and parts[2] else None)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def _common(p: argparse.ArgumentParser, *, default_matrix: int | None = 512) -> None:
    p.add_argument("--out", type=Path, required=True, help="study folder to write (created)")
    p.add_argument(
        "--seed", type=int, default=0, help="decides everything; same seed, same study (default: 0)"
    )
    if default_matrix is not None:
        p.add_argument(
            "--matrix",
            type=int,
            default=default_matrix,
            help=f"image rows and columns (default: {default_matrix}; 128 for quick tests)",
        )
    p.add_argument(
        "--json", action="store_true", help="print the ground truth JSON instead of a summary"
    )


def _ct_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vendor", choices=VENDORS, help="header conventions (default: by seed)")
    p.add_argument("--noise-hu", type=float, help="image noise SD in HU (default: by seed)")
    p.add_argument("--study-date", type=_date, help="YYYY-MM-DD (default: by seed)")
    p.add_argument("--no-scout", dest="scout", action="store_false", help="leave out the localizer")
    dose = p.add_mutually_exclusive_group()
    dose.add_argument(
        "--dose-report",
        dest="dose",
        action="store_true",
        default=None,
        help="add the dose screen (Secondary Capture)",
    )
    dose.add_argument(
        "--no-dose-report",
        dest="dose",
        action="store_false",
        help="leave out the dose screen (default: by seed)",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `synth` and its commands on the main CLI's subparsers."""
    p = subparsers.add_parser(
        "synth",
        help="write synthetic DICOM studies with ground truth",
        description="Write synthetic DICOM studies (head CT with hemorrhages, chest CT with "
        "nodules and their priors, out-of-scope MR/CR) with ground_truth.json beside them. "
        "Files go to OUT/<NNN>_<role>/<instance>.dcm.",
    )
    sub = p.add_subparsers(dest="synth_command", required=True, metavar="KIND")

    head = sub.add_parser(
        "head-ct",
        help="head CT, optionally with hemorrhages",
        description="Head CT: scout, 5 mm and/or thin brain-kernel axials, bone-kernel "
        "series, sometimes a dose screen.",
        epilog="Hemorrhage types: " + ", ".join(HEMORRHAGE_SUBTYPES) + " (or iph, sdh, edh, sah, "
        "ivh). Regions: "
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in HEMORRHAGE_REGIONS.items()),
    )
    _common(head)
    head.add_argument(
        "--hemorrhage",
        action="append",
        default=[],
        metavar="TYPE[:VOLUME_ML[:SIDE[:REGION]]]",
        help="add a hemorrhage (repeatable), e.g. subdural or intraparenchymal:25:left:frontal",
    )
    head.add_argument(
        "--volume-ml",
        type=float,
        default=20.0,
        help="volume of hemorrhages given without one (default: 20)",
    )
    head.add_argument(
        "--side",
        choices=("left", "right"),
        default="right",
        help="side of hemorrhages given without one (default: right)",
    )
    head.add_argument(
        "--region", help="region of hemorrhages given without one (default: chosen by seed)"
    )
    head.add_argument(
        "--protocol",
        choices=("thick", "thin", "both"),
        default="thick",
        help="thick 5 mm, thin (vendor's 0.5-0.9 mm) or both (default: thick)",
    )
    head.add_argument(
        "--contrast",
        action="store_true",
        help="contrast-enhanced (vessels and sinuses bright, ContrastBolusAgent)",
    )
    head.add_argument(
        "--no-bone", dest="bone", action="store_false", help="leave out the bone-kernel series"
    )
    _ct_common(head)
    head.set_defaults(synth_run=run_head_ct, handler=_handler)

    chest = sub.add_parser(
        "chest-ct",
        help="chest CT, optionally with lung nodules",
        description="Chest CT: scout, soft-tissue axials, lung-kernel series, sometimes a "
        "dose screen.",
        epilog="Nodule types: "
        + ", ".join(NODULE_TYPES)
        + " (or ggo, ggn, subsolid). Lobes: "
        + ", ".join(LUNG_LOBES)
        + " (default: by seed).",
    )
    _common(chest)
    chest.add_argument(
        "--nodule",
        action="append",
        default=[],
        metavar="TYPE:DIAMETER_MM[:LOBE]",
        help="add a nodule (repeatable), e.g. solid:8 or part-solid:14:RUL",
    )
    chest.add_argument("--slices", type=int, help="number of slices (default: 350 mm of cover)")
    chest.add_argument(
        "--slice-mm",
        type=float,
        default=1.25,
        help="slice thickness and spacing in mm (default: 1.25)",
    )
    chest.add_argument(
        "--no-lung", dest="lung", action="store_false", help="leave out the lung-kernel series"
    )
    _ct_common(chest)
    chest.set_defaults(synth_run=run_chest_ct, handler=_handler)

    hist = sub.add_parser(
        "history",
        help="one patient's chest CTs: priors and the current study",
        description="Chest CTs of one patient at regular intervals with nodules at the same "
        "place, growing with a volume doubling time or stable. Studies go to "
        "OUT/study_<YYYYMMDD>.",
    )
    _common(hist)
    hist.add_argument(
        "--nodule",
        action="append",
        default=[],
        metavar="TYPE:DIAMETER_MM[:LOBE]",
        help="nodule at its current size (repeatable; default: solid:8)",
    )
    hist.add_argument("--priors", type=int, default=2, help="number of prior studies (default: 2)")
    hist.add_argument(
        "--interval-days", type=int, default=365, help="days between studies (default: 365)"
    )
    hist.add_argument(
        "--doubling-time-days",
        type=float,
        help="volume doubling time; leave out for stable nodules",
    )
    hist.add_argument("--slices", type=int, help="number of slices (default: 350 mm of cover)")
    hist.add_argument(
        "--slice-mm", type=float, default=1.25, help="slice thickness (default: 1.25)"
    )
    hist.add_argument("--vendor", choices=VENDORS, help="header conventions (default: by seed)")
    hist.set_defaults(synth_run=run_history, handler=_handler)

    non = sub.add_parser(
        "non-ct",
        help="an MR brain or CR chest study (out of scope for the CT pathways)",
        description="A study the CT pathways must decline: MR brain (T1, T2, FLAIR) or a PA "
        "chest radiograph.",
    )
    _common(non, default_matrix=None)
    non.add_argument("--modality", choices=("MR", "CR"), default="MR", help="(default: MR)")
    non.add_argument("--matrix", type=int, help="rows and columns (default: MR 256, CR 1024)")
    non.set_defaults(synth_run=run_non_ct, handler=_handler)


def _handler(args: argparse.Namespace, settings: Any = None) -> int:
    """Entry used by the main CLI (`handler(args, settings)`); settings are not needed."""
    return run(args)


def run(args: argparse.Namespace) -> int:
    fn: Callable[[argparse.Namespace], int] = args.synth_run
    return fn(args)


def _print(truths: Sequence[StudyTruth], as_json: bool) -> None:
    if as_json:
        if len(truths) == 1:
            print(truths[0].to_json())
        else:
            print("[" + ",\n".join(t.to_json() for t in truths) + "]")
        return
    for t in truths:
        print(f"study {t.study_uid}")
        print(
            f"  kind {t.kind}  accession {t.accession_number}  patient {t.patient_id}  "
            f"date {t.study_date}  vendor {t.vendor} ({t.manufacturer_model_name})"
        )
        for s in t.series:
            ref = "  [reference]" if s.is_reference else ""
            print(
                f"  series {s.series_number:>4} {s.role:<6} {s.n_instances:>4} x "
                f"{s.description!r:<28} {s.directory}{ref}"
            )
        for les in t.lesions:
            loc = les.location
            print(
                f"  lesion {les.tracking_id}: {les.subtype} {les.volume_ml:.2f} mL "
                f"(target {les.target_volume_ml:.2f}), {les.longest_axial_diameter_mm:.1f} mm, "
                f"{loc.side} {loc.region}"
            )
        print(f"  ground truth {Path(t.directory) / TRUTH_FILENAME}")


def run_head_ct(args: argparse.Namespace) -> int:
    from pacsflow.synth.studies import write_head_ct_study

    hems = [parse_hemorrhage(h, args.volume_ml, args.side, args.region) for h in args.hemorrhage]
    truth = write_head_ct_study(
        args.out,
        seed=args.seed,
        hemorrhages=hems,
        contrast=args.contrast,
        protocol=args.protocol,
        matrix=args.matrix,
        vendor=args.vendor,
        noise_hu=args.noise_hu,
        study_date=args.study_date,
        with_scout=args.scout,
        with_bone=args.bone,
        with_dose_report=args.dose,
    )
    _print([truth], args.json)
    return 0


def run_chest_ct(args: argparse.Namespace) -> int:
    from pacsflow.synth.studies import write_chest_ct_study

    truth = write_chest_ct_study(
        args.out,
        seed=args.seed,
        nodules=[parse_nodule(n) for n in args.nodule],
        matrix=args.matrix,
        slice_mm=args.slice_mm,
        n_slices=args.slices,
        vendor=args.vendor,
        noise_hu=args.noise_hu,
        study_date=args.study_date,
        with_scout=args.scout,
        with_lung=args.lung,
        with_dose_report=args.dose,
    )
    _print([truth], args.json)
    return 0


def run_history(args: argparse.Namespace) -> int:
    from pacsflow.synth.studies import write_patient_history

    nodules = [parse_nodule(n) for n in args.nodule] or [Nodule("solid", 8.0)]
    truths = write_patient_history(
        args.out,
        seed=args.seed,
        nodules=nodules,
        n_priors=args.priors,
        interval_days=args.interval_days,
        doubling_time_days=args.doubling_time_days,
        matrix=args.matrix,
        slice_mm=args.slice_mm,
        n_slices=args.slices,
        vendor=args.vendor,
    )
    _print(truths, args.json)
    return 0


def run_non_ct(args: argparse.Namespace) -> int:
    from pacsflow.synth.studies import write_non_ct_study

    truth = write_non_ct_study(args.out, seed=args.seed, modality=args.modality, matrix=args.matrix)
    _print([truth], args.json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: `python -m pacsflow.synth ...` (same commands as `pacsflow synth`)."""
    parser = argparse.ArgumentParser(prog="pacsflow")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except PacsflowError as exc:
        print(f"pacsflow: error: {exc}", file=sys.stderr)
        return 2
