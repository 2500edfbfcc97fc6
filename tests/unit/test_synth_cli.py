"""`pacsflow synth ...` commands (pacsflow.synth.cli)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from pacsflow.errors import InvalidInputError
from pacsflow.synth import cli
from pacsflow.synth.truth import load_truth


def test_head_ct_writes_a_study_and_its_ground_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sdh"
    rc = cli.main(
        [
            "synth",
            "head-ct",
            "--hemorrhage",
            "subdural",
            "--out",
            str(out),
            "--matrix",
            "64",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    truth = load_truth(out)
    printed = capsys.readouterr().out
    assert truth.study_uid in printed and truth.accession_number in printed
    assert str(out / "ground_truth.json") in printed
    for s in truth.series:
        assert s.directory in printed
    (les,) = truth.lesions
    assert les.subtype == "subdural" and les.target_volume_ml == 20.0
    assert les.location.side == "right"
    assert next((out / "002_thick").glob("*.dcm")).is_file()


def test_head_ct_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "opts"
    rc = cli.main(
        [
            "synth",
            "head-ct",
            "--out",
            str(out),
            "--matrix",
            "48",
            "--seed",
            "1",
            "--hemorrhage",
            "iph:12:left:frontal",
            "--hemorrhage",
            "sah",
            "--volume-ml",
            "4",
            "--side",
            "left",
            "--vendor",
            "philips",
            "--contrast",
            "--noise-hu",
            "5",
            "--no-bone",
            "--no-dose-report",
            "--study-date",
            "2025-02-03",
            "--json",
        ]
    )
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["vendor"] == "philips" and data["contrast"] is True
    assert data["noise_hu"] == 5.0 and data["study_date"] == "2025-02-03"
    assert [s["role"] for s in data["series"]] == ["scout", "thick"]
    iph, sah = data["lesions"]
    assert (iph["subtype"], iph["target_volume_ml"], iph["location"]["region"]) == (
        "intraparenchymal",
        12.0,
        "frontal lobe",
    )
    assert (sah["subtype"], sah["target_volume_ml"], sah["location"]["side"]) == (
        "subarachnoid",
        4.0,
        "left",
    )
    ds = pydicom.dcmread(next((out / "002_thick").glob("*.dcm")))
    assert ds.ContrastBolusAgent


def test_chest_ct_and_history_and_non_ct(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(
            [
                "synth",
                "chest-ct",
                "--out",
                str(tmp_path / "c"),
                "--matrix",
                "64",
                "--slices",
                "60",
                "--slice-mm",
                "5",
                "--nodule",
                "solid:14:RUL",
                "--nodule",
                "ggo:16",
            ]
        )
        == 0
    )
    truth = load_truth(tmp_path / "c")
    assert [n.subtype for n in truth.lesions] == ["solid", "ground-glass"]
    assert truth.lesions[0].lobe == "RUL"
    assert (
        cli.main(
            [
                "synth",
                "history",
                "--out",
                str(tmp_path / "h"),
                "--matrix",
                "64",
                "--slices",
                "60",
                "--slice-mm",
                "5",
                "--priors",
                "1",
                "--interval-days",
                "200",
                "--doubling-time-days",
                "300",
                "--nodule",
                "solid:15",
            ]
        )
        == 0
    )
    studies = sorted((tmp_path / "h").glob("study_*"))
    assert len(studies) == 2
    assert load_truth(studies[0]).patient_id == load_truth(studies[1]).patient_id
    assert cli.main(["synth", "non-ct", "--out", str(tmp_path / "mr"), "--matrix", "32"]) == 0
    assert load_truth(tmp_path / "mr").modality == "MR"
    assert "study " in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--hemorrhage", "bleed"],
        ["--hemorrhage", "subdural:lots"],
        ["--hemorrhage", "subdural:10:up"],
        ["--hemorrhage", "intraventricular:5:left:frontal"],
    ],
)
def test_bad_hemorrhage_is_an_error_not_a_crash(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(["synth", "head-ct", "--out", str(tmp_path / "x"), "--matrix", "32", *argv])
    assert rc == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_parse_nodule() -> None:
    n = cli.parse_nodule("part-solid:14:rul")
    assert (n.nodule_type, n.diameter_mm, n.lobe) == ("part-solid", 14.0, "RUL")
    with pytest.raises(InvalidInputError):
        cli.parse_nodule("solid")
    with pytest.raises(InvalidInputError):
        cli.parse_nodule("solid:big")


def test_help_describes_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["synth", "head-ct", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("--hemorrhage", "--volume-ml", "--protocol", "--contrast", "subarachnoid"):
        assert word in text


def test_add_parser_plugs_into_a_main_cli(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="pacsflow")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(sub)
    args = parser.parse_args(
        ["synth", "non-ct", "--modality", "CR", "--matrix", "64", "--out", str(tmp_path / "cr")]
    )
    assert args.handler(args, None) == 0  # the main CLI calls handler(args, settings)
    assert (
        cli.run(
            parser.parse_args(["synth", "non-ct", "--matrix", "32", "--out", str(tmp_path / "mr")])
        )
        == 0
    )
    assert load_truth(tmp_path / "cr").modality == "CR"


def test_module_entry_point(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pacsflow.synth",
            "head-ct",
            "--out",
            str(tmp_path / "m"),
            "--matrix",
            "32",
            "--no-bone",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "ground truth" in out.stdout
