"""The champion's label in progress reports: named by a single task's promotion gate only."""

from __future__ import annotations

from types import SimpleNamespace

from streamtrain.train.reporting import champion_of


def _registry(*gates: object, partitioned: bool = False) -> SimpleNamespace:
    tasks = {f"m/p{i}": SimpleNamespace(gate=g) for i, g in enumerate(gates)}
    return SimpleNamespace(partitioned=partitioned, tasks=tasks)


def _gate(champion: str, since: int = 0) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(champion=champion, since=since, spec="HT"))


def test_a_single_gate_names_its_champion() -> None:
    assert champion_of(_registry(_gate("tree", 1200))) == {
        "champion": "tree",
        "champion_since": 1200,
        "champion_spec": "HT",
    }


def test_no_gate_or_several_replicas_name_none() -> None:
    assert champion_of(_registry(None)) == {}
    assert champion_of(_registry(_gate("a"), partitioned=True)) == {}
    assert champion_of(_registry(_gate("a"), _gate("b"))) == {}
    assert champion_of(_registry()) == {}
