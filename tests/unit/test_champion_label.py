"""The champion's label in progress reports: named by a single task's promotion gate only."""

from __future__ import annotations

from types import SimpleNamespace

from streamtrain.train.reporting import champion_label


def _registry(*gates: object, partitioned: bool = False) -> SimpleNamespace:
    tasks = {f"m/p{i}": SimpleNamespace(gate=g) for i, g in enumerate(gates)}
    return SimpleNamespace(partitioned=partitioned, tasks=tasks)


def _gate(champion: str) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(champion=champion))


def test_a_single_gate_names_its_champion() -> None:
    assert champion_label(_registry(_gate("tree"))) == "tree"


def test_no_gate_or_several_replicas_name_none() -> None:
    assert champion_label(_registry(None)) is None
    assert champion_label(_registry(_gate("a"), partitioned=True)) is None
    assert champion_label(_registry(_gate("a"), _gate("b"))) is None
    assert champion_label(_registry()) is None
