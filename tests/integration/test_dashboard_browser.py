"""The dashboard in a real browser (Debian's Chromium via Playwright) during a training run.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``) and the ``playwright`` Python
package; Playwright's own browser download is never used. Saves ``artifacts/dashboard.png``.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from river import datasets
from trainers import train_command, trainer_env

from streamtrain.config import KafkaSettings
from streamtrain.data.events import encode_event
from streamtrain.serving.app import BackgroundServer, create_app, create_kafka_app
from streamtrain.serving.curves import PALETTE
from streamtrain.serving.follower import MetricsHub, StaticSnapshotSource
from streamtrain.serving.report import render_report
from streamtrain.serving.tokens import parse_tokens
from streamtrain.state.keys import SigningKey

pytestmark = pytest.mark.kafka

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECRET = "dashboard-test-secret-0123456789"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def _missing(what: str) -> None:
    # On a developer's machine a missing browser skips this test; in CI it is a set-up
    # error, which a skip would hide.
    if os.environ.get("CI"):
        pytest.fail(f"{what}: the CI set-up must install it", pytrace=False)
    pytest.skip(what, allow_module_level=True)


try:
    from playwright import sync_api
except ImportError:
    _missing("the playwright Python package is not installed")
if not os.access(CHROMIUM, os.X_OK):
    _missing(f"{CHROMIUM} is not installed (apt-get install chromium)")


def _feed(bootstrap: str, topic: str, halt: threading.Event) -> None:
    """About 1,500 events/s, and now and then a record the trainer must dead-letter."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    stream = iter(datasets.synth.Agrawal(seed=3))
    for tick in itertools.count():
        if halt.is_set():
            break
        for x, y in itertools.islice(stream, 150):
            producer.produce(topic, value=encode_event(x, y))
        if tick % 5 == 0:
            producer.produce(topic, value=b"{not json")
        if tick % 7 == 0:
            producer.produce(topic, value=b'{"x": {"salary": "high"}, "y": 1}')
        producer.poll(0)
        halt.wait(0.1)
    producer.flush(30)


def _console(message: Any, problems: list[str]) -> None:
    # The page polls /model, which answers 503 until a checkpoint is loaded; Chromium logs
    # every non-2xx fetch as an error. Those are expected; anything else is a problem.
    text = message.text
    if message.type == "error" and "status of 503" not in text:
        problems.append(f"console {message.type}: {text}")


def _points(page: Any, selector: str) -> int:
    return int(page.get_attribute(selector, "data-points") or 0)


# What uPlot holds and drew in a chart host: the values of its first line (the whole-run
# curve), and how many pixels of the plot area have that line's colour.
_CHART_STATE = """([selector, color]) => {
  const host = document.querySelector(selector);
  const u = window.StreamtrainCharts.uplot(host);
  if (!u) return null;
  const ys = u.data[1].filter((v) => v != null);
  const { left, top, width, height } = u.bbox;
  const px = u.ctx.getImageData(left, top, width, height).data;
  const want = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  let inked = 0;
  for (let i = 0; i < px.length; i += 4) {
    if (px[i + 3] > 200 && want.every((c, k) => Math.abs(px[i + k] - c) < 24)) inked++;
  }
  return { xs: u.data[0].length, ys, inked, label: u.series[1].label };
}"""


def _chart(page: Any, selector: str, color: str) -> dict[str, Any]:
    state = page.evaluate(_CHART_STATE, [selector, color])
    assert state is not None, f"no chart in {selector}"
    return dict(state)


def _zoom_holds_while_new_points_come(page: Any, curve: str, count: str) -> None:
    """Drag across a curve: uPlot zooms in, and stays zoomed while points arrive; a
    double-click zooms out to the whole curve again."""
    x_scale = (
        "(() => { const u = window.StreamtrainCharts.uplot(document.querySelector("
        f"'{curve}')); return [u.scales.x.min, u.scales.x.max, u.data[0].at(-1)]; }})()"
    )
    box = page.locator(curve + " .u-over").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    page.mouse.up()
    zoomed = page.evaluate(x_scale)
    assert zoomed[1] < zoomed[2]  # the view ends before the newest point
    n = page.evaluate(count)
    page.wait_for_function(f"() => ({count}) >= {n + 2}", timeout=30_000)
    assert page.evaluate(x_scale)[:2] == zoomed[:2]
    page.mouse.dblclick(box["x"] + box["width"] * 0.5, y)
    n = page.evaluate(count)
    page.wait_for_function(f"() => ({count}) >= {n + 1}", timeout=30_000)
    low, high, newest = page.evaluate(x_scale)
    assert high == newest and low < zoomed[0]


def test_dashboard_shows_the_model_learning(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic, name = unique_name("dash"), unique_name("model")
    ckpt, metrics_topic = unique_name("ckpt"), unique_name("metrics")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})  # kept alive until created
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    halt = threading.Event()
    feeder = threading.Thread(target=_feed, args=(kafka_bootstrap, topic, halt), daemon=True)
    feeder.start()
    trainer = subprocess.Popen(
        train_command(
            kafka_bootstrap,
            topic,
            name,
            ckpt,
            "--metrics-topic",
            metrics_topic,
            "--metric",
            "ROCAUC",
            "--metric",
            "Accuracy",
            "--rolling-window",
            "500",
            "--checkpoint-interval",
            "1",
            "--batch-size",
            "200",
            # A challenger that beats the champion by far on Agrawal: the gate promotes it
            # within the first thousand events or so.
            "--challenger",
            "tree=HoeffdingTreeClassifier",
            "--promote",
            "auto",
            "--promote-on",
            "ROCAUC",
            "--promote-window",
            "300",
            "--promote-after",
            "2",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=trainer_env(SECRET),
    )
    app = create_kafka_app(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        SigningKey(SECRET.encode(), "test"),
        name,
        checkpoint_topic=ckpt,
        metrics_topic=metrics_topic,
    )
    requests: list[str] = []
    base = "(server not started)"
    problems: list[str] = []
    try:
        with BackgroundServer(app) as server, sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.on("request", lambda r: requests.append(r.url))
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("console", lambda m: _console(m, problems))
                base = server.url
                page.goto(base + "/")

                curve = '[data-metric="ROCAUC"]'
                page.wait_for_selector(curve, timeout=60_000)  # a record with ROCAUC came
                # The whole-run line's points in uPlot's data (undefined: another line's x).
                count = (
                    "window.StreamtrainCharts.uplot(document.querySelector("
                    f"'{curve}'))?.data[1].filter((v) => v != null).length ?? 0"
                )
                try:
                    page.wait_for_function(f"() => ({count}) >= 5", timeout=60_000)
                except sync_api.TimeoutError:
                    pytest.fail(f"the ROCAUC curve did not fill: {problems}, {requests[-5:]}")
                before = _chart(page, curve, "#2563eb")
                records_before = page.evaluate("window.streamtrain.records()")
                # The trainer reports twice a second: the curve must grow while we watch.
                grown = len(before["ys"]) + 6
                page.wait_for_function(f"() => ({count}) >= {grown}", timeout=30_000)
                assert page.evaluate("window.streamtrain.records()") > records_before
                after = _chart(page, curve, "#2563eb")
                assert len(after["ys"]) >= grown  # uPlot got the new points
                assert after["inked"] > 100  # and drew them: the curve's blue is on the canvas
                assert after["label"] == "c0 · StandardScaler | LogisticRegression"
                # Both models on the chart (whole run and rolling window each), and the
                # gate's promotion of the challenger marked where it happened.
                page.wait_for_function(
                    f"() => JSON.parse(document.querySelector('{curve}').dataset.markers)"
                    ".includes('tree replaces c0')",
                    timeout=30_000,
                )
                assert json.loads(page.get_attribute(curve, "data-series") or "[]") == [
                    "c0 · StandardScaler | LogisticRegression",
                    "c0 rolling",
                    "tree · HoeffdingTreeClassifier",
                    "tree rolling",
                ]
                tree = _chart(page, curve, PALETTE[1])
                assert tree["inked"] > 100  # the challenger's green is drawn too
                page.wait_for_selector("#models-table tr[data-model='tree']", timeout=10_000)
                roles = page.locator("#models-table tr[data-model] td:nth-child(3)")
                assert roles.all_text_contents() == ["challenger", "champion"]
                # The curve starts where ROCAUC is defined, not at River's 0 before both
                # classes were seen.
                assert after["ys"][0] != 0
                assert _chart(page, '[data-metric="Accuracy"]', "#2563eb")["inked"] > 0
                assert _chart(page, "#chart-rate", "#0891b2")["inked"] > 0
                assert _chart(page, "#chart-lag", "#9333ea")["xs"] > 0
                assert _points(page, "#chart-rate") > 0
                assert page.is_hidden("#join")  # this trainer joins no labels
                _zoom_holds_while_new_points_come(page, curve, count)

                page.wait_for_function(
                    "() => document.querySelector('#served-version').textContent.includes('@')",
                    timeout=30_000,
                )
                assert page.text_content("#model-name") == name
                assert topic in (page.text_content("#served-version") or "")
                # /model lists the champion and its challenger from the served checkpoint.
                page.wait_for_function(
                    "() => window.streamtrain.model()?.models?.[0]?.label === 'tree'",
                    timeout=30_000,
                )
                served = page.evaluate("window.streamtrain.model().models")
                assert [(m["label"], m["role"]) for m in served] == [
                    ("tree", "champion"),
                    ("c0", "challenger"),
                ]
                assert served[0]["champion_since"] > 0 and served[1]["events_learned"] > 0
                assert page.get_attribute("#status", "data-state") == "live"
                page.wait_for_selector("#dlq-bars .bar-row", timeout=30_000)
                reasons = page.locator("#dlq-bars .bar-row .name").all_text_contents()
                assert {"undecodable", "bad-features"} <= set(reasons), reasons
                events = int((page.text_content("#kpi-events") or "0").replace(",", ""))
                assert events > 0

                time.sleep(1.5)  # let a few more points in for the picture
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            finally:
                browser.close()
    finally:
        halt.set()
        feeder.join(30)
        if trainer.poll() is None:
            trainer.send_signal(signal.SIGTERM)
        try:
            trainer.wait(30)
        except subprocess.TimeoutExpired:
            trainer.kill()
            trainer.wait(10)
    assert trainer.returncode == 0, trainer.stderr.read() if trainer.stderr else ""
    assert not problems, problems
    # Every asset and call went to this server: nothing from a CDN or anywhere else.
    assert requests and all(url.startswith(base + "/") for url in requests), requests


def test_dashboard_shows_the_join_of_a_joined_model() -> None:
    """The join card, from records put in the hub by hand (no broker needed): hidden until a
    record has a join, then its figures as the newest record has them."""
    hub = MetricsHub()
    base = {"kind": "progress", "ts": time.time(), "events_learned": 10, "metrics": {}}
    hub.publish(base)
    join = {
        "pending": 1234,
        "held_labels": 7,
        "joined": 56789,
        "expired": 3,
        "defaulted": 0,
        "unmatched": 11,
        "duplicate": 0,
        "evicted": 0,
        "label_delay_p50_ms": 250.0,
        "label_delay_p99_ms": 1500.0,
        "joins_per_second": 420.0,
    }
    problems: list[str] = []
    app = create_app("joined", StaticSnapshotSource(None), hub)
    with BackgroundServer(app) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: _console(m, problems))
            page.goto(server.url + "/")
            page.wait_for_function("() => window.streamtrain.records() === 1")
            assert page.is_hidden("#join")
            hub.publish({**base, "ts": time.time(), "join": join})
            page.wait_for_selector("#join", state="visible", timeout=10_000)
            shown = {
                field: page.text_content(f"#join-{field}")
                for field in ("pending", "held", "rate", "joined", "p50", "p99")
            }
            expired = page.locator("#join-expired")
            unmatched = page.locator("#join-unmatched")
            assert expired.text_content() == str(join["expired"])
            assert unmatched.text_content() == str(join["unmatched"])
            assert expired.get_attribute("class") == "warn"  # something went missing
            assert page.get_attribute("#join-defaulted", "class") == ""
        finally:
            browser.close()
    assert shown == {
        "pending": f"{join['pending']:,}",
        "held": str(join["held_labels"]),
        "rate": f"{join['joins_per_second']:,.0f}",
        "joined": f"{join['joined']:,}",
        "p50": f"{join['label_delay_p50_ms']:.0f} ms",
        "p99": f"{join['label_delay_p99_ms'] / 1000:.1f} s",
    }
    assert not problems, problems


def test_dashboard_marks_the_champions_drift_on_its_curves() -> None:
    """Records put in the hub by hand (no broker needed): a drift detection of the champion
    in the newest record is a red line across the learning curve at its event count."""
    hub = MetricsHub()
    for i in range(1, 31):
        hub.publish(
            {"kind": "progress", "ts": time.time(), "events_learned": i * 100,
             "metrics": {"ROCAUC": 0.5 + i / 100}}
        )  # fmt: skip
    curve = '.chart[data-metric="ROCAUC"]'
    red = "#dc2626"
    problems: list[str] = []
    app = create_app("drifting", StaticSnapshotSource(None), hub)
    with BackgroundServer(app) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: _console(m, problems))
            page.goto(server.url + "/")
            page.wait_for_function("() => window.streamtrain.records() === 30")
            page.wait_for_selector(curve)
            before = _chart(page, curve, red)["inked"]
            detection = {"label": "champion", "events": 2000, "action": "alert"}
            drift = {"detector": "ADWIN", "detections": {"champion": 1}, "recent": [detection]}
            hub.publish(
                {"kind": "progress", "ts": time.time(), "events_learned": 3100,
                 "metrics": {"ROCAUC": 0.8}, "drift": drift}
            )  # fmt: skip
            page.wait_for_function("() => window.streamtrain.records() === 31")
            page.wait_for_timeout(300)  # the next animation frame draws it
            after = _chart(page, curve, red)["inked"]
        finally:
            browser.close()
    assert before == 0 and after > 50, (before, after)
    assert not problems, problems


def test_dashboard_signs_in_with_a_read_token() -> None:
    """With tokens, the page at / asks for one; after a read token, the dashboard draws its
    event stream (which a browser cannot send a header with) from the cookie alone."""
    token = "dashboard-read-token-0123456789"
    tokens = parse_tokens(f"read {token}\nfull dashboard-full-token-0123456789", "test")
    hub = MetricsHub()
    hub.publish({"kind": "progress", "ts": time.time(), "events_learned": 10, "metrics": {}})
    problems: list[str] = []
    app = create_app("guarded", StaticSnapshotSource(None), hub, tokens=tokens)
    with BackgroundServer(app) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            first = page.goto(server.url + "/")
            assert first is not None and first.status == 401
            page.fill("#token", "not-the-token-0123456789")
            page.click("input[type=submit]")
            assert "not valid" in (page.text_content("body") or "")
            assert page.url == server.url + "/login"  # the form's answer, no token in it
            page.fill("#token", token)
            with page.expect_navigation(url=server.url + "/"):
                page.click("input[type=submit]")
            page.wait_for_function("() => window.streamtrain.records() === 1", timeout=10_000)
            assert page.text_content("#model-name") == "guarded"
            assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it
        finally:
            browser.close()
    assert not problems, problems


def test_report_draws_its_charts_offline(tmp_path: Path) -> None:
    """The HTML report opened from a file: uPlot, inlined and allowed by its hash, draws every
    chart, and the page asks for nothing but itself."""
    records = [
        {
            "kind": "progress",
            "ts": 1_800_000_000.0 + i / 2,
            "elapsed_seconds": i / 2,
            "events_learned": 100 * (i + 1),
            "events_per_second": 200.0,
            "total_lag": 40 - i,
            "metrics": {"ROCAUC": 0.0 if i < 3 else 0.6 + i / 200},
            "rolling": {"ROCAUC": 0.0 if i < 3 else 0.65},
        }
        for i in range(40)
    ]
    path = tmp_path / "report.html"
    path.write_text(render_report("offline", records), encoding="utf-8")
    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}"))
            page.goto(path.as_uri())
            page.wait_for_selector("[data-chart='2'] .uplot canvas", timeout=10_000)
            curve = _chart(page, "[data-chart='0']", "#2563eb")
            rate = _chart(page, "[data-chart='1']", "#0891b2")
            lag = _chart(page, "[data-chart='2']", "#9333ea")
        finally:
            browser.close()
    assert curve["ys"][0] == 0.6 + 3 / 200 and len(curve["ys"]) == 37  # from where defined
    assert curve["inked"] > 100 and rate["inked"] > 0 and lag["inked"] > 100
    assert not problems, problems  # a script the policy blocked would be reported here
    assert requests == [path.as_uri()]
