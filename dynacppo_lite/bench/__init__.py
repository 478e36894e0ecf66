"""Benchmarks: ``python -m dynacppo_lite bench <suite>`` runs ``bench.<suite>.main``."""
