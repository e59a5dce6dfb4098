"""Benchmark suites behind ``scripts/bench``."""
