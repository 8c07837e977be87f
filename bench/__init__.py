"""Benchmarks: each prints its figures as ratios against a reference run in the same process or run.

Run one with ``python -m bench.<name>`` from the repository root (or all with ``make bench``): they
import each other and bench/harness.py as a package, so ``python bench/<name>.py`` is not supported.
bench/harness.py holds what benchmarks and tests share (tests import it; bench/ never imports tests/).
"""
