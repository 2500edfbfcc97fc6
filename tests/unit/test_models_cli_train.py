"""`pacsflow models train --members`: the model's own config with another network count."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from models.cli import _with_members
from models.ich.data import CONFIG as ICH
from pacsflow.cli.main import main
from pacsflow.errors import InvalidInputError


def test_members_changes_only_the_network_count() -> None:
    one = _with_members("ich", 1)
    assert ICH.members == 4
    assert one == replace(ICH, members=1)


@pytest.mark.parametrize(("model", "members"), [("ich", 0), ("nodule", 2)])
def test_impossible_member_counts_are_refused(model: str, members: int) -> None:
    with pytest.raises(InvalidInputError, match=f"--members {members}"):
        _with_members(model, members)


def test_the_command_line_refuses_them_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["models", "train", "nodule", "--members", "2", "--out", str(tmp_path)])
    assert code == 2
    assert "the nodule model trains one network" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
