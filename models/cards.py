"""Model cards (markdown) built from the catalogue entry and the shipped evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.catalogue import LIMITATIONS, WEIGHTS_DIR, ModelSpec


def read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else {}


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def _table(rows: dict[str, Any]) -> str:
    lines = ["| metric | value |", "| --- | --- |"]
    for key, value in rows.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    return "\n".join(lines)


# Strata of the held-out evaluation shown on the card, per model (key -> strata names).
CARD_STRATA: dict[str, tuple[str, ...]] = {
    "ich": ("vendor", "protocol", "noise_band", "visibility")
}
STRATA_COLUMNS = ("studies", "sensitivity", "specificity", "volume_abs_error_ml_median")

# What the evaluation showed about a model's failure modes, beyond the general limitations.
MODEL_LIMITATIONS: dict[str, tuple[str, ...]] = {
    "ich": (
        "Study-level sensitivity and specificity meet their goals (>= 0.95) with no room "
        "to spare: 2 of 50 held-out hemorrhages missed and 2 of 50 normal heads flagged "
        "(0.96/0.96); 48 of 50 is the goal's edge. A fifth network, no better on the 400 "
        "validation studies (0.985/0.975 both), gave 0.98/0.94 on held-out: with 50 "
        "studies a side, one study moves a figure by 0.02. Window-first inputs, the thin "
        "series, leaving bone out of findings and four averaged networks lifted it from "
        "0.86/0.86. Other retrains (subdurals drawn more often, scans as sites send them, "
        "larger networks, a 1 mm grid, GPU training with models.ich.sweep) did not beat "
        "the earlier weights.",
        "Reads the thinnest soft-tissue series the study has (the stroke pathway's "
        "choice). Fed a scanner's 5 mm slab averaged from thin slices, a single one of its "
        "networks flagged about a third of normal heads (the bone edge in partial volume); "
        "a site that sends only such slabs must evaluate it on them first. Plain 5 mm "
        "series are in the evaluation.",
        "Misses small subdurals: the two held-out misses are subdurals of 1.1 and 2.7 mL "
        "with 0.3 and 1.0 mL of it at blood density (a 5 mm series; a thin one).",
        "False positives are small components (0.17 and 0.42 mL) at about 53 HU in 5 mm "
        "series, one at the posterior-fossa level next to the transverse sinus, which "
        "is venous blood at 42-55 HU on these images.",
        "Four networks: median 0.97 s per study at a 256 matrix in the evaluation, "
        "against 0.55 s for one network; reading, windowing and resampling the series "
        "are most of a study's time (bench/RESULTS.md, inference run 5).",
        "The operating point keeps components from 0.1 mL: a hemorrhage is often "
        "reported with a few small satellite findings beside the main one.",
        "A finding needs a median density of at most max_median_hu (85 HU on the "
        "synthetic images): clotted or hyperacute blood denser than that, or blood in a "
        "patient with a high hematocrit, would be dropped as calcification; a site must "
        "calibrate this on its own scanners.",
        "The subtype is a geometric estimate (contact with the skull, flatness, depth, "
        "distance from the midline), not a classifier output: deep intraparenchymal "
        "bleeds (basal ganglia, thalamus) are called intraventricular and sulcal blood "
        "next to the skull extra-axial.",
    )
}


def _strata_table(strata: dict[str, Any], key: str) -> str:
    lines = [
        f"| {key} | " + " | ".join(STRATA_COLUMNS) + " |",
        "| --- |" + " ---: |" * len(STRATA_COLUMNS),
    ]
    for name, metrics in strata.get(key, {}).items():
        cells = []
        for col in STRATA_COLUMNS:
            value = metrics.get(col)
            cells.append("-" if value is None else f"{value:.4g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_card(spec: ModelSpec, directory: Path = WEIGHTS_DIR) -> str:
    """The card of the shipped weights of `spec` (evaluation and training logs included
    when present beside the weights)."""
    evaluation = read_json(spec.evaluation(directory))
    training = read_json(spec.training_log(directory))
    config = read_json(spec.config(directory))
    parts = [
        f"# {spec.title}",
        "",
        f"Registered name: `{spec.registered_name}`. Pathway: {spec.pathway}.",
        "",
        "**NOT FOR CLINICAL USE.** " + LIMITATIONS.capitalize() + ".",
        "",
        "## Intended use",
        spec.intended_use,
        "",
        "## Outputs",
        spec.outputs,
        "",
        "## Model",
        f"MONAI 3D UNet, channels {config.get('channels')}, strides {config.get('strides')}, "
        f"residual units {config.get('num_res_units')}; input resampled to "
        f"{config.get('spacing_zyx')} mm (z, y, x), one channel per HU window "
        f"{config.get('windows')}"
        + (", each windowed before resampling" if config.get("window_first") else "")
        + (
            f"; the mean probability of {config['members']} such networks"
            if config.get("members", 1) > 1
            else ""
        )
        + f"; decision threshold {config.get('threshold')}.",
        "",
        "## Training data",
        spec.training_data,
    ]
    if training:
        seeds = training.get("member_seeds")
        parts += [
            "",
            (
                f"Seeds {', '.join(map(str, seeds))} (one per network), "
                if seeds
                else f"Seed {training.get('seed')}, "
            )
            + f"{training.get('plan', {}).get('steps')} steps{' each' if seeds else ''}, "
            f"{training.get('parameters')} parameters, {training.get('seconds')} s on CPU; "
            f"loss {_round(training.get('loss_first_50'))} (first 50 steps) -> "
            f"{_round(training.get('loss_last_50'))} (last 50)"
            + (", the members' mean." if seeds else "."),
        ]
    calibration = read_json(directory / f"{spec.key}.calibration.json")
    if calibration:
        chosen = calibration.get("chosen", {})
        parts += [
            "",
            "## Operating point",
            f"Chosen on {calibration.get('n_studies')} validation studies (seeds from "
            f"{calibration.get('seed')}, apart from training and from the evaluation): "
            + ", ".join(f"{k} {v}" for k, v in chosen.items())
            + ".",
        ]
    parts += ["", "## Evaluation (held-out synthetic studies)"]
    if evaluation:
        parts += [
            evaluation.get("description", ""),
            "",
            _table(evaluation.get("metrics", {})),
        ]
        for key in CARD_STRATA.get(spec.key, ()):
            if evaluation.get("strata", {}).get(key):
                parts += ["", _strata_table(evaluation["strata"], key)]
        goals = evaluation.get("goals", [])
        if goals:
            parts += ["", "Goals:", ""]
            parts += [
                f"- {g['metric']} {g['op']} {g['target']}: "
                f"{'met' if g.get('met') else 'NOT met'} ({g.get('value')})"
                for g in goals
            ]
    else:
        parts.append("No evaluation file shipped.")
    parts += [
        "",
        "## Limitations",
        "- " + LIMITATIONS + ".",
        "- Synthetic anatomy is simpler than real anatomy: no beam hardening, motion, "
        "streak artefacts, post-operative changes, chronic blood or real vessel trees.",
        "- Performance on real scanners is unknown; a site must validate its own weights "
        "before approving a version for clinical use.",
        *(f"- {line}" for line in MODEL_LIMITATIONS.get(spec.key, ())),
        "",
    ]
    return "\n".join(parts)
