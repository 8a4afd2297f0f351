"""Model, metric and dataset specs: strings parsed against allow-lists of River classes."""
