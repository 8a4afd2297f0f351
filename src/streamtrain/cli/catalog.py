"""``streamtrain list``: the names a model, metric or dataset spec may use."""

from __future__ import annotations

import argparse
from typing import Any

from streamtrain.models.spec import (
    dataset_registry,
    detector_registry,
    estimator_registry,
    metric_registry,
)

_REGISTRIES = {
    "models": estimator_registry,
    "metrics": metric_registry,
    "datasets": dataset_registry,
    "detectors": detector_registry,
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "list", help="list the names usable in --model, --metric, --dataset and --drift specs"
    )
    parser.add_argument("what", choices=sorted(_REGISTRIES))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for name in _REGISTRIES[args.what]().names():
        print(name)
    return 0
