"""The trainer: consume, predict-then-learn, dead-letter, report."""
