"""Benchmarks: JSON output, a baseline side by side, ratios. Not timed tests."""
