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
        f"{config.get('windows')}; decision threshold {config.get('threshold')}.",
        "",
        "## Training data",
        spec.training_data,
    ]
    if training:
        parts += [
            "",
            f"Seed {training.get('seed')}, {training.get('plan', {}).get('steps')} steps, "
            f"{training.get('parameters')} parameters, {training.get('seconds')} s on CPU; "
            f"loss {_round(training.get('loss_first_50'))} (first 50 steps) -> "
            f"{_round(training.get('loss_last_50'))} (last 50).",
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
        "",
    ]
    return "\n".join(parts)
