"""The chaos campaign: a seeded, time-boxed run of faults against a partitioned named model
on a 3-broker cluster, ending with a report that accounts for every record.

Run it with ``make chaos`` (``CHAOS_MINUTES``, ``CHAOS_SEED``) or ``python -m chaos``; the
test suite runs a 36-second campaign (``tests/integration/test_chaos_campaign.py``).
It drives the real thing (brokers, ``streamtrain train`` processes, confluent-kafka) and
reuses the integration tests' helpers (``topics.py``, ``oracle.py``), hence the path below.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HELPERS = str(Path(__file__).resolve().parent.parent / "tests" / "integration")
if _HELPERS not in sys.path:
    sys.path.append(_HELPERS)
