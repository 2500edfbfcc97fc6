"""Prefect flows: one module per clinical pathway (plus sweeps and drift monitoring)."""
