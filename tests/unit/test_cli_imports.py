"""Building the CLI's parser imports none of the commands' work.

Every start of ``streamtrain`` builds every command's parser; a parser module that imported
its handler's needs (River and SciPy for train, FastAPI for serve) cost every command, the
suite's hundred trainer processes included, 0.7-1.6 s of CPU each.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("river", "scipy", "numba", "numpy", "fastapi", "uvicorn", "pydantic", "rich")


def test_building_the_parser_imports_no_command_work() -> None:
    probe = (
        "import sys\n"
        "from streamtrain.cli.main import build_parser\n"
        "build_parser().parse_args(['train'])\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == ""


def test_a_command_still_finds_its_handler() -> None:
    from streamtrain.cli.main import build_parser

    for argv in (["models"], ["predict", "--name", "m"], ["train"], ["serve", "--name", "m"]):
        args = build_parser().parse_args(argv)
        assert callable(args.handler)
