"""The operations kit in deploy/: the Prometheus rules pass promtool's checks and unit tests, the
Grafana dashboard imports, and both use only series serve's /metrics really exports (so renaming
a metric breaks this test, not a production alert).

promtool comes from Debian's ``prometheus`` package (``make promtool`` installs it).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from river import datasets, linear_model, preprocessing

from streamtrain.serving.app import create_app
from streamtrain.serving.follower import MetricsHub, StaticSnapshotSource
from streamtrain.serving.snapshot import ModelSnapshot
from streamtrain.state.envelope import CheckpointHeader
from streamtrain.train.progress import Progress
from streamtrain.train.telemetry import progress_record

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "streamtrain-rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "streamtrain-rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "streamtrain-dashboard.json"

# What a sample name in Prometheus' text format adds to its family's name, by family type.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: `make promtool` installs Debian's prometheus package")
    return found


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels() -> list[dict[str, Any]]:
    return [panel for panel in _dashboard()["panels"] if panel["type"] != "row"]


def _dashboard_exprs() -> list[str]:
    exprs = [target["expr"] for panel in _panels() for target in panel["targets"]]
    exprs += [var["definition"] for var in _dashboard()["templating"]["list"]]
    return exprs


def _names(expr: str) -> set[str]:
    """The streamtrain series an expression reads (label values in quotes left out)."""
    tokens = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", re.sub(r'"[^"]*"', '""', expr))
    return {token for token in tokens if "streamtrain_" in token}


# -- promtool ---------------------------------------------------------------------------------


def test_rules_pass_promtool_check(promtool: str) -> None:
    done = _promtool(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def test_each_alert_fires_on_sick_series_and_not_on_healthy_ones(promtool: str) -> None:
    done = _promtool(promtool, "test", "rules", str(RULES_TEST))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    cases = [
        case
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == alerts
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == alerts


def test_every_alert_waits_is_graded_and_tells_what_to_do() -> None:
    alerts = [rule for rule in _rules() if "alert" in rule]
    assert len(alerts) >= 8
    for alert in alerts:
        assert re.fullmatch(r"\d+[smh]", alert["for"]), alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Each query (Grafana's variables given values) as a rule, for promtool's parser."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr}
        for i, expr in enumerate(_dashboard_exprs())
        if not expr.startswith("label_values(")
    ]
    text = json.dumps({"groups": [{"name": "dashboard", "rules": rules}]})
    text = text.replace("$__rate_interval", "5m").replace("$model", ".*")
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(text)  # JSON is YAML
    done = _promtool(promtool, "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


# -- the names used are the names exported ----------------------------------------------------


@pytest.fixture(scope="module")
def exported() -> Iterator[set[str]]:
    """Every sample name serve's /metrics can show, from a scrape with every family present:
    a model loaded, and a trainer record with lag, dead letters and a join."""
    phishing = list(itertools.islice(datasets.Phishing(), 50))
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in phishing:
        model.learn_one(x, y)
    header = CheckpointHeader(
        model_name="m",
        model_spec="StandardScaler | LogisticRegression",
        offsets={"events": {0: 50}},
        events_learned=50,
        dead_lettered=1,
        metrics={"ROCAUC": 0.9},
        created_at=time.time(),
        versions={},
    )
    hub = MetricsHub()
    progress = Progress(
        topic="events",
        model="LogisticRegression",
        events_learned=50,
        dead_lettered=1,
        events_per_second=10.0,
        elapsed_seconds=5.0,
        metrics={"ROCAUC": 0.9},
        lag={0: 3},
        dead_letter_reasons={"bad-label": 1},
        name="m",
    )
    join = {
        **dict.fromkeys(("pending", "held_labels", "joined", "expired", "defaulted"), 1),
        **dict.fromkeys(("unmatched", "duplicate", "evicted"), 0),
        "label_delay_p50_ms": 500.0,
        "label_delay_p99_ms": 900.0,
    }
    hub.publish({**progress_record(progress), "join": join})
    app = create_app("m", StaticSnapshotSource(ModelSnapshot(header, model)), hub)
    with TestClient(app) as client:
        assert client.post("/predict", json={"x": phishing[0][0]}).status_code == 200
        text = client.get("/metrics").text
    yield {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        if family.name.startswith("streamtrain_")
        for suffix in _SUFFIXES[family.type]
    }


def test_the_scrape_has_every_family(exported: set[str]) -> None:
    for name in (
        "streamtrain_trainer_lag",
        "streamtrain_trainer_dead_lettered_total",
        "streamtrain_join_pending",
        "streamtrain_model_checkpoint_age_seconds",
        "streamtrain_predict_latency_seconds_bucket",
    ):
        assert name in exported


def test_rules_use_only_exported_series(exported: set[str]) -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    for rule in _rules():
        for name in _names(rule["expr"]):
            known = recorded if ":" in name else exported
            assert name in known, f"{rule.get('alert') or rule.get('record')} reads {name}"
    # The unit tests feed series by the same names.
    for test in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for series in test["input_series"]:
            assert _names(series["series"]) <= exported, series["series"]


def test_dashboard_uses_only_exported_series(exported: set[str]) -> None:
    used = set().union(*(_names(expr) for expr in _dashboard_exprs()))
    assert used - exported == set()
    # Every trainer, join and model series serve exports has a panel.
    watched = {n for n in exported if not n.endswith(("_created", "_count", "_sum"))}
    assert watched - used == set()


# -- the dashboard imports --------------------------------------------------------------------


def test_dashboard_asks_for_its_datasource_and_every_panel_queries_it() -> None:
    dashboard = _dashboard()
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    panels = _panels()
    assert len(panels) >= 10
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == source, panel["title"]
    variable = dashboard["templating"]["list"][0]
    assert variable["name"] == "model" and variable["datasource"] == source
