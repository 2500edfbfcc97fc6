"""Reliability tests: hostile input, load and faults against the real gateway."""
