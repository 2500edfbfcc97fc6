"""The model registry's governance rules on a real MLflow store (SQLite in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.registry import (
    CHALLENGER,
    CHAMPION,
    Approval,
    NotApprovedError,
    Registry,
    load_by_alias,
)
from models.segmenter import Segmenter, SegmenterConfig, build_network
from pacsflow.errors import InvalidInputError, PermanentError

pytestmark = [pytest.mark.mlflow]

NAME = "pacsflow-test-ich"
TINY = SegmenterConfig(
    kind="ich",
    spacing_zyx=(5.0, 4.0, 4.0),
    windows=((0.0, 100.0),),
    channels=(4, 8),
    strides=(2,),
    num_res_units=0,
)


def _weights(tmp: Path, seed: int) -> tuple[Path, Path]:
    """A tiny network whose weights differ by seed, so versions are distinguishable."""
    torch.manual_seed(seed)
    net = build_network(TINY)
    weights, config = tmp / f"w{seed}.pt", tmp / f"w{seed}.json"
    torch.save(net.state_dict(), weights)
    config.write_text(TINY.to_json())
    return weights, config


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, list[str], str]:
    """Two registered versions of one model and one evidence run."""
    import mlflow

    tmp = tmp_path_factory.mktemp("mlflow")
    registry = Registry(f"sqlite:///{tmp / 'mlflow.db'}")
    versions = []
    for seed in (1, 2):
        weights, config = _weights(tmp, seed)
        info = registry.register(
            NAME,
            weights=weights,
            config=config,
            model_card=f"# test model {seed}\n",
            metrics={"sensitivity": 0.9 + seed / 100},
            params={"seed": seed},
        )
        versions.append(info.version)
    with mlflow.start_run(experiment_id=registry.experiment_id("evidence")) as run:
        mlflow.log_metric("specificity", 0.97)
    return registry, versions, run.info.run_id


def _approval(run_id: str) -> Approval:
    return Approval(
        approved_by="committee",
        evidence_run=run_id,
        intended_use="tests",
        limitations="trained on nothing",
    )


def test_artifacts_stay_beside_the_database(store: tuple[Registry, list[str], str]) -> None:
    registry, _, _ = store
    assert registry.artifact_root is not None
    assert any(registry.artifact_root.rglob("model_card.md"))


def test_promote_of_an_unapproved_version_is_refused(
    store: tuple[Registry, list[str], str],
) -> None:
    registry, versions, _ = store
    with pytest.raises(NotApprovedError):
        registry.promote(NAME, versions[0])
    assert registry.champion_version(NAME) is None


def test_approve_needs_a_real_evidence_run(store: tuple[Registry, list[str], str]) -> None:
    registry, versions, _ = store
    with pytest.raises(InvalidInputError):
        registry.approve(NAME, versions[0], _approval(" "))


def test_approve_promote_rollback_and_load(store: tuple[Registry, list[str], str]) -> None:
    registry, (v1, v2), run_id = store
    info = registry.approve(NAME, v1, _approval(run_id))
    assert info.approved and info.approval is not None
    assert info.approval.evidence_run == run_id
    assert registry.promote(NAME, v1).aliases == [CHAMPION]

    registry.approve(NAME, v2, _approval(run_id))
    registry.promote(NAME, v2)
    assert registry.champion_version(NAME) == v2

    segmenter, loaded = load_by_alias(registry.tracking_uri, NAME)
    assert loaded.version == v2
    assert isinstance(segmenter, Segmenter)
    expected = Segmenter.from_files(*_weights(registry.artifact_root.parent, 2))  # type: ignore[union-attr]
    for a, b in zip(
        segmenter.network.state_dict().values(),
        expected.network.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    hu = np.full((4, 16, 16), 40.0, dtype=np.float32)
    assert segmenter.probability(hu, (5.0, 4.0, 4.0)).shape == hu.shape

    back = registry.rollback(NAME)
    assert back.version == v1
    assert registry.champion_version(NAME) == v1
    assert load_by_alias(registry.tracking_uri, NAME)[1].version == v1
    # Nothing earlier than v1 was ever champion.
    with pytest.raises(PermanentError):
        registry.rollback(NAME)


def test_shadow_sets_and_clears_the_challenger(store: tuple[Registry, list[str], str]) -> None:
    registry, (_, v2), _ = store
    info = registry.shadow(NAME, v2)
    assert info is not None and CHALLENGER in info.aliases
    assert registry.challenger_version(NAME) == v2
    registry.shadow(NAME, None)
    assert registry.challenger_version(NAME) is None


def test_unknown_version_is_a_clear_error(store: tuple[Registry, list[str], str]) -> None:
    registry, _, _ = store
    with pytest.raises(InvalidInputError, match="no model version"):
        registry.show(NAME, "99")
