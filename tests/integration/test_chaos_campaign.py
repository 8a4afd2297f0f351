"""The chaos campaign (``chaos/``, ``make chaos``) as the suite runs it: 36 seconds on the
session's 3-broker cluster, every fault kind injected once, every record accounted for.

The short version covers each fault kind of :data:`chaos.schedule.KINDS` once (and poison
records); ``make chaos`` (5 minutes, seed 1) adds repeats and faults overlapping each other's
recovery. The seed is chosen for its short schedule: seed 1010's first 36 s draw all seven
kinds, its trainer pause (11.6 s) outlasts the session (6 s) so the paused trainer is fenced,
and every fault is over before the campaign ends (the last starts at 30 s). It was seed 12
for a minute (ten faults, three of them repeats), 25 s longer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.accounting import account, table
from chaos.campaign import campaign
from chaos.schedule import KINDS, schedule
from streamtrain.broker import LocalCluster

pytestmark = pytest.mark.kafka

SEED = 1010  # its 36-second schedule draws every fault kind, each once
SECONDS = 36.0


@pytest.mark.timeout(900)
def test_a_short_campaign_with_every_fault_kind_accounts_for_every_record(
    kafka_cluster: LocalCluster, tmp_path: Path
) -> None:
    faults = schedule(SEED, SECONDS)
    assert sorted(f.kind for f in faults) == sorted(KINDS)  # each kind once, none skipped
    run = campaign(kafka_cluster, SEED, SECONDS, workdir=tmp_path)
    report = account(run)
    print(table(report))
    (tmp_path / "report.json").write_text(json.dumps(report, indent=2))
    assert set(report["faults"]) == {*KINDS, "poison-record"}, report["faults"]
    records = report["records"]
    assert records["produced"] > 10_000
    assert min(records["learned"], records["dead_lettered"], records["predicted"]) > 0
    assert records["produced"] == records["accounted"]
    assert report["lost"] == report["learned_twice"] == report["outputs_twice"] == 0
    assert report["replicas_identical_to_oracle"] == "4/4"
    assert report["ok"], report
