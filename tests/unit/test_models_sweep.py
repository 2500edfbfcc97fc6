"""The sweep's comparison: every study rendered once, each weight folder's operating point
chosen on validation studies only and then applied to held-out ones."""

from __future__ import annotations

from models.catalogue import WEIGHTS_DIR
from models.ich.sweep import VARIANTS, compare


def test_compare_reports_validation_choice_and_held_out_result_per_folder() -> None:
    report = compare([WEIGHTS_DIR], n_validation=2, n_held_out=2, workers=1, device="cpu")
    result = report["variants"][str(WEIGHTS_DIR)]
    assert set(result) >= {"point", "validation", "held_out", "held_out_errors"}
    for split in ("validation", "held_out"):
        assert 0.0 <= result[split]["sensitivity"] <= 1.0
        assert 0.0 <= result[split]["specificity"] <= 1.0
    # One normal and one hemorrhage study per split (the case mix alternates them).
    assert all(e["seed"] in (10_000, 10_001) for e in result["held_out_errors"])


def test_every_variant_names_a_known_data_source() -> None:
    from models.ich.sweep import SOURCES

    assert VARIANTS and all(v.source in SOURCES for v in VARIANTS.values())
