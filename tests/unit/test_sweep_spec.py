"""Sweep specification, QIDO result parsing and the checkpoint file (no archive needed)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from pacsflow.errors import ConfigError, InvalidInputError
from pacsflow.pathways.sweep import (
    SweepCheckpoint,
    SweepSpec,
    checkpoint_path,
    load_checkpoint,
    reset_sweep,
    save_checkpoint,
    study_from_qido,
)


def spec(**kw: object) -> SweepSpec:
    values: dict[str, object] = {"name": "s1", "start": date(2025, 1, 1), "end": date(2025, 1, 31)}
    values.update(kw)
    return SweepSpec.model_validate(values)


@pytest.mark.parametrize(
    "bad",
    [
        {"end": date(2024, 12, 31)},
        {"name": "../etc/passwd"},
        {"name": ".hidden"},
        {"window_days": 0},
        {"page_size": 0},
        {"description_pattern": "chest("},
        {"modality": "ct*"},
    ],
)
def test_invalid_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        spec(**bad)


def test_selection_fingerprint_ignores_how_but_not_what() -> None:
    base = spec(modality="CT", body_parts=frozenset({"chest"}))
    assert base.body_parts == frozenset({"CHEST"})
    same = spec(
        modality="CT", body_parts=frozenset({"CHEST"}), end=date(2026, 1, 1), page_size=7,
        window_days=3,
    )  # fmt: skip
    assert base.selection_fingerprint() == same.selection_fingerprint()
    for other in (
        spec(modality="MR", body_parts=frozenset({"CHEST"})),
        spec(modality="CT"),
        spec(modality="CT", body_parts=frozenset({"CHEST"}), start=date(2024, 1, 1)),
        spec(modality="CT", body_parts=frozenset({"CHEST"}), description_pattern="lung"),
    ):
        assert other.selection_fingerprint() != base.selection_fingerprint()


def test_study_from_qido() -> None:
    item = {
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00100020": {"vr": "LO", "Value": ["PAT1"]},
        "00080050": {"vr": "SH", "Value": ["ACC1"]},
        "00080020": {"vr": "DA", "Value": ["20250102"]},
        "00081030": {"vr": "LO", "Value": ["CT CHEST"]},
        "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
        "00201208": {"vr": "IS", "Value": [12]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]},
    }
    study = study_from_qido(item)
    assert study.study_uid == "1.2.3" and study.patient_id == "PAT1"
    assert study.study_date == date(2025, 1, 2) and study.modalities == ("CT", "SR")
    assert study.number_of_instances == 12
    assert "DOE" not in study.model_dump_json()  # no patient name in what a flow passes on
    bare = study_from_qido({"0020000D": {"vr": "UI", "Value": ["9"]}, "00080020": {"vr": "DA"}})
    assert bare.study_date is None and bare.study_description == ""
    with pytest.raises(InvalidInputError):
        study_from_qido({"00100020": {"vr": "LO", "Value": ["PAT1"]}})


def test_checkpoint_round_trip_and_reset(tmp_path: Path) -> None:
    directory = tmp_path / "var" / "sweeps"
    assert load_checkpoint(directory, "s1") is None
    checkpoint = SweepCheckpoint(
        sweep="s1",
        selection="abc",
        window_start=date(2025, 1, 3),
        offset=5,
        done_in_window=["1.2", "1.3"],
        updated_at=datetime(2025, 1, 3, tzinfo=UTC),
    )
    save_checkpoint(directory, checkpoint)
    save_checkpoint(directory, checkpoint.model_copy(update={"offset": 6}))
    loaded = load_checkpoint(directory, "s1")
    assert loaded == checkpoint.model_copy(update={"offset": 6})
    assert [p.name for p in directory.iterdir()] == ["s1.json"]
    reset_sweep(directory, "s1")
    reset_sweep(directory, "s1")  # nothing to forget: fine
    assert load_checkpoint(directory, "s1") is None


def test_checkpoint_of_another_version_is_refused(tmp_path: Path) -> None:
    checkpoint = SweepCheckpoint(
        version=99, sweep="s1", selection="x", window_start=date(2025, 1, 1),
        updated_at=datetime(2025, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    save_checkpoint(tmp_path, checkpoint)
    assert checkpoint_path(tmp_path, "s1").exists()
    with pytest.raises(ConfigError, match="version 99"):
        load_checkpoint(tmp_path, "s1")
