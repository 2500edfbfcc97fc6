"""Bootstrap of the shipped models into a fresh registry, and the `pacsflow models` verbs,
on a real MLflow store (SQLite in tmp_path)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from models import cli
from models.bootstrap import ensure_registered
from models.catalogue import LIMITATIONS, MODELS
from models.registry import Registry
from models.segmenter import SegmenterConfig, build_network
from pacsflow.config import Settings, load_settings
from pacsflow.errors import PermanentError

pytestmark = [pytest.mark.mlflow]


def _shipped(directory: Path) -> Path:
    """Tiny stand-ins for the shipped weights, config and evaluation of each model."""
    directory.mkdir(parents=True, exist_ok=True)
    for key, spec in MODELS.items():
        config = SegmenterConfig(
            kind=key,
            spacing_zyx=(5.0, 4.0, 4.0),
            windows=((0.0, 100.0),),
            channels=(4, 8),
            strides=(2,),
            num_res_units=0,
        )
        torch.manual_seed(0)
        torch.save(build_network(config).state_dict(), spec.weights(directory))
        spec.config(directory).write_text(config.to_json())
        spec.evaluation(directory).write_text(
            json.dumps({"n_studies": 3, "metrics": {"sensitivity": 0.97}, "goals": []})
        )
    return directory


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    var = tmp_path_factory.mktemp("var")
    return load_settings(paths={"var_dir": var})


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _shipped(tmp_path_factory.mktemp("weights"))


def test_bootstrap_registers_approves_and_promotes_once(
    settings: Settings, weights_dir: Path
) -> None:
    uri = settings.mlflow_tracking_uri
    first = ensure_registered(uri, weights_dir=weights_dir)
    assert set(first) == {"ich", "nodule"}
    for key, info in first.items():
        assert info.name == MODELS[key].registered_name
        assert "champion" in info.aliases
        assert info.approval is not None
        assert info.approval.limitations == LIMITATIONS
        evidence = Registry(uri).client.get_run(info.approval.evidence_run)
        assert evidence.data.metrics["sensitivity"] == pytest.approx(0.97)
        assert "NOT FOR CLINICAL USE" in info.description
    again = ensure_registered(uri, weights_dir=weights_dir)
    assert {k: v.version for k, v in again.items()} == {k: v.version for k, v in first.items()}
    assert len(Registry(uri).versions("pacsflow-ich")) == 1
    # Runs logged straight into SQLite keep their artifacts beside the database.
    assert (settings.mlflow_artifact_root / "pacsflow-ich").is_dir()


def test_cli_list_show_and_governance_verbs(
    settings: Settings, weights_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))

    def run(*argv: str) -> str:
        args = parser.parse_args(["models", *argv])
        assert args.handler(args, settings) == 0
        return capsys.readouterr().out

    listing = run("list")
    assert "pacsflow-ich" in listing and "pacsflow-nodule" in listing
    assert "champion" in listing and "approved by pacsflow-demo" in listing

    spec = MODELS["ich"]
    out = run(
        "register",
        "ich",
        "--weights",
        str(spec.weights(weights_dir)),
        "--config",
        str(spec.config(weights_dir)),
        "--evaluation",
        str(spec.evaluation(weights_dir)),
    )
    assert "registered pacsflow-ich v2" in out
    with pytest.raises(PermanentError, match="not approved"):
        run("promote", "ich", "2")
    champion = json.loads(run("show", "ich"))
    run(
        "approve",
        "ich",
        "2",
        "--by",
        "committee",
        "--evidence-run",
        champion["approval"]["evidence_run"],
        "--intended-use",
        "demo",
        "--limitations",
        LIMITATIONS,
    )
    assert "champion -> v2" in run("promote", "ich", "2")
    assert "challenger -> v1" in run("shadow", "ich", "1")
    assert "rolled back -> v1" in run("rollback", "ich")
    shown = json.loads(run("show", "pacsflow-ich"))
    assert shown["version"] == "1" and "champion" in shown["aliases"]
    assert "challenger cleared" in run("shadow", "ich", "--clear")
