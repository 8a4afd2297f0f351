"""The chaos campaign (``chaos/``, ``make chaos``) as the suite runs it: one minute on the
session's 3-broker cluster, every fault kind drawn, every record accounted for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.accounting import account, table
from chaos.campaign import campaign
from chaos.schedule import KINDS
from streamtrain.broker import LocalCluster

pytestmark = pytest.mark.kafka

SEED = 12  # its one-minute schedule draws every fault kind
SECONDS = 60.0


@pytest.mark.timeout(900)
def test_a_one_minute_campaign_accounts_for_every_record(
    kafka_cluster: LocalCluster, tmp_path: Path
) -> None:
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
