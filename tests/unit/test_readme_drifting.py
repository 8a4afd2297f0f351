"""The README's drifting example (challengers, promotions, drift on the dashboard) as written:
every command parses with streamtrain's own parser, the dataset spec builds the drifting
stream it says, and the model specs build the champion and its challengers. (The run itself,
on a local broker, is the one docs/drifting.png was taken from.)"""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

from streamtrain.cli.main import build_parser
from streamtrain.data.sources import open_source
from streamtrain.models.spec import estimator_registry, parse_spec
from streamtrain.train.challengers import Roster, parse_challengers
from streamtrain.train.progressive import build_metrics

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Watching challengers on a drifting stream", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None
    lines = block.group(1).replace("\\\n", " ").splitlines()
    commands = [[w for w in shlex.split(line, comments=True) if w != "&"] for line in lines]
    return [c for c in commands if c]


def test_every_command_of_the_example_parses_as_written() -> None:
    commands = _example()
    assert [c[:2] for c in commands] == [
        ["streamtrain", "broker"],
        ["streamtrain", "produce"],
        ["streamtrain", "serve"],
        ["streamtrain", "train"],
        ["streamtrain", "report"],
    ]
    parser = build_parser()
    parsed = {c[1]: parser.parse_args(c[1:]) for c in commands}  # a bad flag exits here
    assert parsed["serve"].name == parsed["train"].name == parsed["report"].name == "loans"
    assert parsed["produce"].topic == parsed["train"].topic == "loans"


def test_the_example_streams_a_concept_change_and_its_models_build() -> None:
    args = {c[1]: build_parser().parse_args(c[1:]) for c in _example()}
    produce, train = args["produce"], args["train"]
    source = open_source(dataset=produce.dataset, limit=produce.limit)
    assert source.size == 24_000
    first = list(itertools.islice(source, 5))
    assert len(first) == 5 and all(isinstance(y, int) for _, y in first)
    champion = parse_spec(train.model, estimator_registry())
    specs = parse_challengers(train.challengers)
    assert [s.label for s in specs] == ["tree", "arf"]
    roster = Roster(specs, build_metrics(list(train.metrics), champion), champion)
    assert [s.spec for s in roster.specs] == [
        "HoeffdingTreeClassifier",
        "forest.ARFClassifier(n_models=5, seed=1)",
    ]
