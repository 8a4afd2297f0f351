"""Command-line interface: argument parsing and wiring only; the work lives in the subsystems."""
