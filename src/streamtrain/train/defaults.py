"""The trainer's default names and choices, in a module that imports nothing.

Every command's parser shows them (``train --help``), and every start of the CLI builds every
parser: reading them from :mod:`streamtrain.train.settings` or :mod:`streamtrain.train.drift`
would import River and SciPy (about a second) into each command, ``produce`` and ``serve``
included.
"""

from __future__ import annotations

DEFAULT_TOPIC = "ml_training_data"
DEFAULT_MODEL = "StandardScaler | LogisticRegression"

# Drift detection: the default detector, "off", and what a detection may trigger.
DEFAULT_DETECTOR = "ADWIN"
OFF = "none"
ALERT = "alert"
RESET_CHALLENGERS = "reset-challengers"
PROMOTE_BEST = "promote-best"
ACTIONS = (ALERT, RESET_CHALLENGERS, PROMOTE_BEST)
