"""Every model's view of a metrics record: defined points only, promotions, drift by model."""

from __future__ import annotations

from typing import Any

from streamtrain.serving.curves import CHAMPION, PALETTE, ModelViews, plain_number


def _record(events: int, auc: float, challengers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "events_learned": events,
        "spec": "LogisticRegression",
        "metrics": {"ROCAUC": auc, "LogLoss": 0.0},
        "rolling": {"ROCAUC": auc},
        "challengers": challengers,
        **extra,
    }


def _challenger(spec: str, auc: float, learned: int, started_at: int = 0) -> dict[str, Any]:
    return {
        "spec": spec,
        "metrics": {"ROCAUC": auc, "LogLoss": 0.1},
        "rolling": {},
        "events_learned": learned,
        "started_at": started_at,
    }


def _by_label(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["label"]: m for m in record["models"]}


def test_a_metric_is_left_out_until_defined_for_each_model_on_its_own() -> None:
    views = ModelViews()
    first = views.annotate(
        _record(
            100, -0.0, {"tree": _challenger("HT", 0.0, 100), "arf": _challenger("ARF", 0.6, 100)}
        )
    )
    models = _by_label(first)
    # River's ROCAUC before both classes were seen (0, or -0.0) is no point; LogLoss at 0 is
    # its best value, kept; a challenger already past its placeholder has its point.
    assert models["c0"]["metrics"] == {"ROCAUC": None, "LogLoss": 0.0}
    assert models["tree"]["metrics"]["ROCAUC"] is None
    assert models["arf"]["metrics"]["ROCAUC"] == 0.6
    second = views.annotate(
        _record(
            200, 0.7, {"tree": _challenger("HT", 0.0, 200), "arf": _challenger("ARF", 0.0, 200)}
        )
    )
    models = _by_label(second)
    assert models["c0"]["metrics"]["ROCAUC"] == 0.7
    assert models["tree"]["metrics"]["ROCAUC"] is None  # still its placeholder
    assert models["arf"]["metrics"]["ROCAUC"] == 0.0  # a value once the metric was defined
    # A restart from an earlier checkpoint starts a new segment: placeholders again.
    again = views.annotate(_record(50, 0.0, {"tree": _challenger("HT", 0.0, 50)}))
    assert _by_label(again)["c0"]["metrics"]["ROCAUC"] is None
    # Before the first event learned nothing is a point, whatever the metric.
    assert ModelViews().annotate(_record(0, 0.5, {}))["models"][0]["metrics"] == {
        "ROCAUC": None,
        "LogLoss": None,
    }


def test_promotions_are_followed_by_label_and_drift_is_put_on_the_model_that_drifted() -> None:
    views = ModelViews()
    roster = {"tree": _challenger("HT", 0.8, 1000), "arf": _challenger("ARF", 0.7, 1000)}
    before = views.annotate(_record(1000, 0.6, roster))
    assert [(m["label"], m["champion"], m["color"]) for m in before["models"]] == [
        ("c0", True, PALETTE[0]),
        ("tree", False, PALETTE[1]),
        ("arf", False, PALETTE[2]),
    ]
    # The gate promoted tree: its figures are at the top now, c0 is a challenger.
    recent = [
        {"label": "champion", "events": 900, "action": "alert"},
        {"label": "champion", "events": 2000, "action": "alert"},
        {"label": "arf", "events": 1500, "action": "alert"},
    ]
    after = views.annotate(
        _record(
            2000,
            0.85,
            {
                "c0": _challenger("LogisticRegression", 0.61, 2000),
                "arf": _challenger("ARF", 0.72, 2000),
            },
            drift={"recent": recent},
        )
    )
    models = _by_label(after)
    assert [m["label"] for m in after["models"]] == ["c0", "tree", "arf"]  # colours stay put
    assert models["tree"]["champion"] and not models["c0"]["champion"]
    assert models["tree"]["metrics"]["ROCAUC"] == 0.85 and models["tree"]["spec"] == "HT"
    assert models["c0"]["metrics"]["ROCAUC"] == 0.61
    assert models["c0"]["spec"] == "LogisticRegression"
    assert after["promotions"] == [{"from": "c0", "to": "tree", "events": 2000}]
    assert after["drifts"] == [
        {"model": "c0", "events": 900, "action": "alert"},
        {"model": "tree", "events": 2000, "action": "alert"},  # the champion then: tree
        {"model": "arf", "events": 1500, "action": "alert"},
    ]
    # Promotions stay in every later record (a thinned history may drop the one above).
    later = views.annotate(_record(3000, 0.86, after["challengers"]))
    assert later["promotions"] == after["promotions"]
    # A challenger removed is no promotion.
    removed = views.annotate(
        _record(3100, 0.86, {"c0": _challenger("LogisticRegression", 0.6, 3100)})
    )
    assert removed["promotions"] == after["promotions"]
    assert [m["label"] for m in removed["models"]] == ["c0", "tree"]


def test_a_champion_the_trainer_names_wins_and_a_lost_name_is_said_so() -> None:
    views = ModelViews()
    named = views.annotate(_record(10, 0.5, {"c0": _challenger("LR", 0.5, 10)}, champion="tree"))
    assert [(m["label"], m["champion"]) for m in named["models"]] == [("tree", True), ("c0", False)]
    assert named["promotions"] == []  # promoted before this serve started: not seen here
    # Started after a promotion, without the name: the champion is called so.
    blind = ModelViews().annotate(_record(10, 0.5, {"c0": _challenger("LR", 0.5, 10)}))
    assert [m["label"] for m in blind["models"]] == [CHAMPION, "c0"]


def test_no_figure_keeps_the_sign_of_a_negative_zero() -> None:
    assert str(plain_number(-0.0)) == "0.0"
    assert plain_number(float("inf")) is None and plain_number("1") is None
    views = ModelViews()
    annotated = views.annotate(
        {"events_learned": 5, "metrics": {"R2": 0.3, "MAE": -0.0}, "rolling": {"MAE": -0.0}}
    )
    (model,) = annotated["models"]
    assert str(model["metrics"]["MAE"]) == "0.0" and str(model["rolling"]["MAE"]) == "0.0"


def test_a_record_naming_its_champion_marks_the_promotion_at_that_record() -> None:
    # Trainers with a promotion gate name the champion in each report (train/reporting.py):
    # the promotion is marked at the first report that names the new one.
    views = ModelViews()
    roster = {"tree": _challenger("HT", 0.8, 1000)}
    views.annotate(_record(1000, 0.6, roster, champion="c0"))
    after = views.annotate(
        _record(1500, 0.8, {"c0": _challenger("LR", 0.6, 1500)}, champion="tree")
    )
    assert _by_label(after)["tree"]["champion"] and not _by_label(after)["c0"]["champion"]
    assert views.promotions == [{"from": "c0", "to": "tree", "events": 1500}]


def test_a_first_record_after_the_promotion_still_marks_it_where_the_gate_made_it() -> None:
    # serve started (or the trainer's first report came) after the gate promoted: the record's
    # champion_since says where.
    views = ModelViews()
    first = _record(2000, 0.8, {"c0": _challenger("LR", 0.6, 2000)}, champion="tree")
    seen = views.annotate({**first, "champion_since": 1200, "champion_spec": "HT"})
    assert views.promotions == [{"from": "c0", "to": "tree", "events": 1200}]
    # The founder keeps the first colour, and the champion its own spec (the record's
    # top-level spec is the run's first model's).
    assert [(m["label"], m["spec"], m["champion"]) for m in seen["models"]] == [
        ("c0", "LR", False),
        ("tree", "HT", True),
    ]
    # The founder still champion: no marker.
    again = ModelViews()
    again.annotate(_record(500, 0.6, {"tree": _challenger("HT", 0.7, 500)}, champion="c0"))
    assert again.promotions == []
