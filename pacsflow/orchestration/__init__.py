"""How the platform starts flow runs: Prefect's REST API, by deployment name.

The platform never imports Prefect itself (flows live above it); it speaks the server's
HTTP API, which is also what `run_deployment` uses underneath.
"""
