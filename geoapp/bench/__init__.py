"""Benchmarks that print what this machine achieves: ``python -m geoapp.bench search|model|data``."""
