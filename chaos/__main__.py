"""``python -m chaos``: a campaign on a 3-broker cluster of its own, then its report.

Settings: ``--seed``/``CHAOS_SEED`` (default 1), ``--minutes``/``CHAOS_MINUTES`` (default 5),
``--report PATH`` (default ``chaos/report.json``). Exit 0 when every record is accounted
for, 1 when not, 2 on bad settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from chaos.accounting import account, table
from chaos.campaign import campaign
from streamtrain.broker import LocalCluster
from streamtrain.broker.process import free_ports

REPORT = Path(__file__).resolve().parent / "report.json"


def _number(name: str, raw: str, kind: type[int] | type[float]) -> int | float:
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value < 0:
        print(f"chaos: {name} must be a non-negative number, got {raw!r}", file=sys.stderr)
        sys.exit(2)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--seed", default=os.environ.get("CHAOS_SEED") or "1")
    parser.add_argument("--minutes", default=os.environ.get("CHAOS_MINUTES") or "5")
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    seed = int(_number("the seed (CHAOS_SEED)", args.seed, int))
    minutes = float(_number("the length (CHAOS_MINUTES)", args.minutes, float))
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    ports = free_ports(6)
    pairs = list(zip(ports[::2], ports[1::2], strict=True))
    cluster = LocalCluster(data_dir=workdir / "cluster", ports=pairs)
    print(f"chaos: seed {seed}, {minutes} minutes; starting a 3-broker cluster in {workdir}")
    cluster.up(wait_seconds=180)
    try:
        run = campaign(cluster, seed, minutes * 60, workdir=workdir)
        report = account(run)
    finally:
        cluster.down()
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"report: {args.report}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
