"""How flows run: Prefect deployments, schedules, and the warm runner that serves them."""
