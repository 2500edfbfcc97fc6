"""Helpers shared by pacsflow's tests, the demo and the benchmarks (real services on loopback)."""
