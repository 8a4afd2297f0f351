"""Using a named model's committed state: load, predict, describe."""
