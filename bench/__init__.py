"""Benchmarks: each prints its figures as ratios against a reference run in the same process or run.

Run one with ``python -m bench.<name>`` from the repository root (or all with ``make bench``).
"""
