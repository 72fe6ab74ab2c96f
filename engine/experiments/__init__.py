"""Timing scripts, run as ``python -m diffrecon.benchmarks.<name>`` (never part of the tests)."""
