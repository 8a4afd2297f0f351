"""Fetch Apicurio Registry (its runnable Quarkus archive) with Maven, once, into the cache.

Version choice: Apicurio Registry 3.0.9 is the newest line that runs on Java 17, the Java the
broker already needs; 3.1+ needs Java 21, which a machine with "Java 17+" need not have. The
parts streamtrain uses (the Confluent-compatible API at ``/apis/ccompat/v7``, the global
compatibility rule, in-memory storage) are all in 3.0.9.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from streamtrain.broker.runtime import _exclusive_lock, _run_streaming, cache_root, find_java
from streamtrain.errors import SchemaRegistryError

APICURIO_VERSION = "3.0.9"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
RUNNER_JAR = f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
NEEDED_FOR = f"Apicurio Registry {APICURIO_VERSION}"
_COMPLETE_MARKER = "COMPLETE"


def apicurio_home(cache_dir: Path | None = None, version: str = APICURIO_VERSION) -> Path:
    """The directory of one unpacked Apicurio Registry version (runner jar and ``lib/``)."""
    root = Path(cache_dir).expanduser().absolute() if cache_dir is not None else cache_root()
    return root / "apicurio-registry" / version


def is_installed(home: Path) -> bool:
    """True only for an unpacked archive that finished: marker and runner jar present."""
    return (home / _COMPLETE_MARKER).is_file() and (home / RUNNER_JAR).is_file()


def ensure_registry_jar(cache_dir: Path | None = None, *, quiet: bool = True) -> Path:
    """The runner jar of Apicurio Registry, fetched with ``mvn`` and unpacked on first use.

    Like the Kafka jars, the fetch goes to a temporary sibling renamed into place when complete.
    Raises :class:`~streamtrain.errors.BrokerError` when no usable Java is found (checked first,
    so a missing Java is reported before a download) and :class:`SchemaRegistryError` when the
    fetch fails.
    """
    find_java(NEEDED_FOR)
    home = apicurio_home(cache_dir)
    if is_installed(home):
        return home / RUNNER_JAR
    home.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(home.parent / f".{home.name}.lock"):
        if not is_installed(home):
            _fetch(home, quiet=quiet)
    return home / RUNNER_JAR


def _fetch(home: Path, *, quiet: bool) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SchemaRegistryError(
            f"Apache Maven (`mvn`) is needed once to fetch {NEEDED_FOR} but it is not on PATH; "
            "install Maven and retry"
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{home.name}.partial-", dir=home.parent))
    try:
        download = staging / "download"
        command = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "dependency:copy",
            f"-Dartifact={ARTIFACT}",
            f"-DoutputDirectory={download}",
        ]
        if not quiet:
            print(
                f"Fetching {NEEDED_FOR} with mvn into {home} (first run only)…",
                file=sys.stderr,
                flush=True,
            )
        started = time.monotonic()
        returncode, tail = _run_streaming(command, cwd=staging, echo=not quiet)
        archives = list(download.glob("*.tar.gz"))
        if returncode != 0 or len(archives) != 1:
            detail = " | ".join(line for line in tail if line.strip()) or "no output"
            raise SchemaRegistryError(
                f"mvn failed (exit {returncode}) fetching {ARTIFACT}: {detail}"
            )
        with tarfile.open(archives[0]) as archive:
            # The "data" filter refuses absolute paths, links out of the tree and device files.
            archive.extractall(staging, filter="data")
        shutil.rmtree(download)
        if not (staging / RUNNER_JAR).is_file():
            raise SchemaRegistryError(f"the archive mvn fetched has no {RUNNER_JAR}")
        (staging / _COMPLETE_MARKER).write_text(f"apicurio {APICURIO_VERSION}\n", encoding="utf-8")
        if home.exists():
            shutil.rmtree(home)
        staging.chmod(0o755)
        os.replace(staging, home)
        if not quiet:
            print(
                f"Fetched {NEEDED_FOR} in {time.monotonic() - started:.0f} s.",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
