"""The promotion gate: the rule on hand-made windows, then on Phishing against the same rule
applied offline with River alone (tests/integration/promotions.py), through the real step."""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
from river import datasets, evaluate, linear_model, metrics, naive_bayes, preprocessing, tree

from streamtrain.config import resolve
from streamtrain.data.events import encode_event
from streamtrain.errors import ConfigError
from streamtrain.formats import promotion_request
from streamtrain.state.payload import TrainState, freeze, thaw
from streamtrain.train.assembly import promotion_rule
from streamtrain.train.challengers import Challenger, Challengers, Roster, parse_challengers
from streamtrain.train.progressive import ProgressiveEvaluator, build_metrics
from streamtrain.train.promotion import Gate, GateState, Promotion, PromotionRule
from streamtrain.train.requests import PromotionRequests
from streamtrain.train.settings import TrainSettings
from streamtrain.train.step import SimpleRecord
from streamtrain.train.tasks import Task
from tests.integration.promotions import offline_promotions

PHISHING = list(datasets.Phishing())
CHALLENGERS = ("lr=StandardScaler | LogisticRegression", "ht=HoeffdingTreeClassifier")
ORACLES = {
    "c0": naive_bayes.GaussianNB,
    "lr": lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    "ht": tree.HoeffdingTreeClassifier,
}


class Window:
    """A stand-in for a windowed metric whose value the test sets."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def get(self) -> float:
        return self.value


def _gate(rule: PromotionRule, champion: float, **challengers: tuple[float, int]) -> Gate:
    """A gate over evaluators whose windows read as given (label=(value, events learned))."""

    def evaluator(value: float) -> ProgressiveEvaluator:
        model = linear_model.LogisticRegression()
        ev = ProgressiveEvaluator(model, {rule.on: metrics.ROCAUC()})
        ev.rolling[rule.key] = Window(value)
        return ev

    roster = Challengers(
        [
            Challenger(label, "LogisticRegression", evaluator(v), events_learned=n)
            for label, (v, n) in challengers.items()
        ]
    )
    gate = Gate(rule, GateState(spec="founder"), evaluator(champion), roster)
    roster.gate = gate
    return gate


def _windows(gate: Gate, champion: float, **values: float) -> None:
    gate.champion.rolling[gate.rule.key].value = champion
    for label, value in values.items():
        gate.challengers[label].evaluator.rolling[gate.rule.key].value = value


def test_a_win_is_a_strict_lead_of_at_least_the_margin_either_way() -> None:
    up = PromotionRule("ROCAUC", margin=0.02)
    assert up.wins(0.80, 0.83) and up.wins(0.80, 0.82 + 1e-12)
    assert not up.wins(0.80, 0.815) and not up.wins(0.80, 0.70)
    assert not PromotionRule("ROCAUC").wins(0.8, 0.8)  # a tie never wins, even with margin 0
    assert not up.wins(0.80, math.nan) and not up.wins(math.nan, 0.9)
    down = PromotionRule("LogLoss", margin=0.1, bigger_is_better=False)
    assert down.wins(0.6, 0.45) and not down.wins(0.6, 0.55) and not down.wins(0.4, 0.6)


def test_defaults_and_bad_rules() -> None:
    rule = PromotionRule("ROCAUC", window=500)
    assert (rule.interval, rule.least_events, rule.mode) == (50, 500, "manual")
    assert PromotionRule("ROCAUC", window=5).interval == 1
    assert "over the last 500 events" in rule.describe()
    for bad in ({"window": 0}, {"after": 0}, {"every": 0}, {"margin": -1.0}, {"mode": "x"}):
        with pytest.raises(ConfigError):
            PromotionRule("ROCAUC", **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TrainSettings(challengers=("GaussianNB",), promote_margin=math.inf)


def test_evaluations_come_every_e_events_and_k_wins_in_a_row_promote() -> None:
    rule = PromotionRule("ROCAUC", window=10, every=5, after=3, mode="auto")
    gate = _gate(rule, 0.7, a=(0.8, 100), b=(0.9, 5))  # b has learned too little to win
    wins = []
    for n in range(1, 31):
        if n == 12:
            _windows(gate, 0.7, a=0.6)  # a loses the evaluation at 15: its count restarts
        if n == 16:
            _windows(gate, 0.7, a=0.8)
        promoted = gate.after_event()
        if n % 5:
            assert promoted is None
        wins.append(dict(gate.state.wins))
        if promoted is not None:
            break
    assert promoted is not None and n == 30  # wins at 20, 25, 30
    assert (promoted.from_label, promoted.to_label, promoted.events, promoted.by) == (
        "c0",
        "a",
        30,
        "gate",
    )
    assert promoted.values == {"c0": 0.7, "a": 0.8} and promoted.wins == 3
    assert [w["a"] for w in wins[4:-1:5]] == [1, 2, 0, 1, 2]
    assert wins[-1] == {"c0": 0, "b": 0}  # every count starts again; a is the champion
    assert gate.state.champion == "a" and [c.label for c in gate.challengers] == ["c0", "b"]
    assert gate.challengers["c0"].spec == "founder" and gate.state.spec == "LogisticRegression"
    # The evaluator objects kept their roles' places: the champion's now holds a's window.
    assert gate.value(gate.champion) == 0.8 and gate.value(gate.challengers["c0"].evaluator) == 0.7


def test_of_several_winners_the_one_ahead_by_most_then_the_first_is_promoted() -> None:
    rule = PromotionRule("ROCAUC", window=1, every=1, after=1, min_events=0, mode="auto")
    gate = _gate(rule, 0.5, a=(0.6, 0), b=(0.7, 0), c=(0.7, 0))
    promoted = gate.after_event()
    assert promoted is not None and promoted.to_label == "b"


def test_manual_never_promotes_on_its_own_but_promotes_when_asked() -> None:
    rule = PromotionRule("ROCAUC", window=1, every=1, after=1, min_events=0)
    gate = _gate(rule, 0.5, a=(0.9, 10))
    assert all(gate.after_event() is None for _ in range(20))
    assert gate.state.wins == {"a": 20}
    with pytest.raises(KeyError):
        gate.promote("nope", "manual")
    promoted = gate.promote("a", "manual")
    assert (promoted.to_label, promoted.by, gate.state.champion) == ("a", "manual", "a")
    with pytest.raises(KeyError):  # the champion is no challenger
        gate.promote("a", "manual")


def _task(rule: PromotionRule, state: TrainState | None = None) -> Task:
    model = naive_bayes.GaussianNB()
    built = build_metrics(["ROCAUC", "LogLoss"], model)
    roster = Roster(parse_challengers(CHALLENGERS), built, model)
    state = state or TrainState(model, built, 0, {}, {})
    return Task.from_state("t", state, roster=roster, promotion=rule, spec="GaussianNB")


def _records() -> list[SimpleRecord]:
    return [SimpleRecord(encode_event(x, y), 0, i) for i, (x, y) in enumerate(PHISHING)]


@functools.cache
def _pvs(label: str, metric: Any) -> float:
    return float(evaluate.progressive_val_score(PHISHING, ORACLES[label](), metric()).get())


@functools.cache
def _expected() -> list[tuple[int, str, str]]:
    others = {k: ORACLES[k] for k in ("lr", "ht")}
    return offline_promotions(PHISHING, ORACLES["c0"], others, window=50, every=10, after=2)


@pytest.mark.parametrize("cut", [None, 173, 640])
def test_the_step_promotes_where_the_offline_rule_does(cut: int | None) -> None:
    """Through the real step, in odd batches, with a checkpoint round trip at ``cut``: the
    promotions River's offline rule names, at the same events and offsets; every model's
    metrics still River's progressive_val_score for its spec."""
    rule = PromotionRule("ROCAUC", window=50, every=10, after=2, mode="auto")
    expected = _expected()
    assert len(expected) > 3  # the stream makes them trade places several times
    task = _task(rule)
    records, got = _records(), []
    for i in range(0, len(records), 37):
        if cut is not None and i <= cut < i + 37:
            state = task.state()
            restored = thaw(freeze(state), state.events_learned, state.offsets)
            task = _task(rule, restored)
        task.learn(records[i : i + 37])
        got += [p for p in task.take_outputs() if hasattr(p, "to_label")]
    assert [(p.events, p.from_label, p.to_label) for p in got] == expected
    assert all(p.positions == {0: p.events} and p.model == "t" for p in got)
    assert task.gate is not None and task.gate.state.champion == expected[-1][2]
    champion = expected[-1][2]
    for name, metric in (("ROCAUC", metrics.ROCAUC), ("LogLoss", metrics.LogLoss)):
        assert task.evaluator.values()[name] == pytest.approx(_pvs(champion, metric), abs=1e-12)
        for c in task.challengers:
            assert c.evaluator.values()[name] == pytest.approx(_pvs(c.label, metric), abs=1e-12)
    assert {c.label: c.events_learned for c in task.challengers} == {
        label: len(PHISHING) for label in ORACLES if label != champion
    }


def test_a_promoted_champion_is_not_added_again_as_a_challenger_on_restart() -> None:
    rule = PromotionRule("ROCAUC", window=50, every=10, after=2, mode="auto")
    task = _task(rule)
    task.learn(_records()[:100])
    assert task.gate is not None and task.gate.state.champion == "lr"
    state = task.state()
    again = _task(rule, thaw(freeze(state), state.events_learned, state.offsets))
    assert [c.label for c in again.challengers] == ["c0", "ht"]
    assert again.gate is not None and again.gate.state.champion == "lr"
    assert again.summary()["promotion"]["champion"] == "lr"


def test_the_rule_comes_from_flags_env_and_file_and_bad_values_are_misuse() -> None:
    env = {"STREAMTRAIN_PROMOTE_WINDOW": "200", "STREAMTRAIN_PROMOTE_MARGIN": "0.01"}
    file = {"train": {"promote": "auto", "promote_after": 5}}
    settings = resolve(TrainSettings, {"promote_every": 7}, file=file, section="train", env=env)
    rule = settings.promotion_rule("ROCAUC")
    assert (rule.mode, rule.window, rule.margin, rule.after, rule.interval) == (
        "auto",
        200,
        0.01,
        5,
        7,
    )
    assert rule.least_events == 200
    for bad in ({"promote_window": 0}, {"promote": "sometimes"}, {"promote_min_events": -1}):
        with pytest.raises(ConfigError):
            TrainSettings(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="c0"):
        parse_challengers(["c0=GaussianNB"])  # the founder's label


def test_promote_on_must_be_a_metric_of_the_run_that_river_can_window() -> None:
    built = build_metrics(["ROCAUC", "LogLoss"], naive_bayes.GaussianNB())
    with_challenger = TrainSettings(challengers=("GaussianNB",))
    rule = promotion_rule(with_challenger, built)
    assert rule is not None and (rule.on, rule.bigger_is_better) == ("ROCAUC", True)
    rule = promotion_rule(TrainSettings(promote_on="LogLoss"), built)
    assert rule is not None and not rule.bigger_is_better
    with pytest.raises(ConfigError, match="not a metric of this run"):
        promotion_rule(TrainSettings(promote_on="Accuracy"), built)


class _Message:
    def __init__(self, offset: int, value: bytes) -> None:
        self._offset, self._value = offset, value

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None


class _Consumer:
    """Hands over the given messages on the first consume call, then nothing."""

    def __init__(self, messages: list[_Message]) -> None:
        self.batches = [messages]
        self.high = len(messages)
        self.at = 0

    def assign(self, _partitions: Any) -> None:
        pass

    def get_watermark_offsets(self, _tp: Any, timeout: float) -> tuple[int, int]:
        return 0, self.high

    def position(self, tps: list[Any]) -> list[Any]:
        return [type(tp)(tp.topic, tp.partition, self.at) for tp in tps]

    def consume(self, _n: int, timeout: float) -> list[_Message]:
        batch = self.batches.pop() if self.batches else []
        self.at += len(batch)
        return batch


def test_each_request_is_applied_once_per_task_and_an_unknown_label_skipped() -> None:
    rule = PromotionRule("ROCAUC", window=50, every=10, after=2)
    task = _task(rule)
    task.learn(_records()[:30])
    messages = [
        _Message(0, promotion_request("other-model", "lr", 0.0)),
        _Message(1, b"not json"),
        _Message(2, promotion_request("m", "nope", 0.0)),
        _Message(3, promotion_request("m", "ht", 0.0)),
    ]
    requests = PromotionRequests(lambda conf: _Consumer(messages), "events", "m")
    requests.apply({"t": task})
    assert task.gate is not None and task.gate.state.champion == "ht"
    assert task.gate.state.requests == 4
    [promoted] = [p for p in task.take_outputs() if isinstance(p, Promotion)]
    assert (promoted.to_label, promoted.by, promoted.positions) == ("ht", "manual", {0: 30})
    requests.apply({"t": task})  # nothing new: nothing applied again
    assert task.take_outputs() == [] and task.gate.state.promotions == 1
    # A task rolled back to before the request (its state says requests=0) applies it again.
    fresh = _task(rule)
    requests.apply({"t": fresh})
    assert fresh.gate is not None and fresh.gate.state.champion == "ht"


def test_promote_best_picks_the_best_a_window_after_the_champions_drift() -> None:
    """``--on-drift promote-best``, whatever ``--promote`` says: ``window`` events after the
    event the champion's detector fired on, the challenger ahead by most (having learned a
    whole window) is promoted; a detection while one is pending changes nothing; a tie, or
    nobody ahead, keeps the champion."""
    rule = PromotionRule("ROCAUC", window=5, every=1000, after=1, on_drift=True)
    assert "after a drift of the champion" in rule.describe()
    gate = _gate(rule, 0.7, lr=(0.8, 10), ht=(0.9, 10), young=(0.99, 4))
    gate.after_event()  # event 1
    gate.drifted()  # fired on event 2, before the gate counts it
    results = [gate.after_event() for _ in range(3)]  # events 2 to 4
    gate.drifted()  # pending already: nothing changes
    results += [gate.after_event() for _ in range(4)]  # events 5 to 8
    assert results[:5] == [None] * 5 and results[6] is None
    promoted = results[5]
    assert isinstance(promoted, Promotion)
    assert (promoted.events, promoted.by, promoted.from_label, promoted.to_label) == (
        7,
        "drift",
        "c0",
        "ht",
    )
    assert gate.state.best_at == 0 and gate.state.champion == "ht"

    tie = _gate(rule, 0.8, lr=(0.8, 10))
    tie.drifted()
    assert [tie.after_event() for _ in range(7)] == [None] * 7
    assert tie.state.champion == "c0" and tie.state.best_at == 0
