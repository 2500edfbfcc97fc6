"""Prefect tasks: thin typed wrappers over the plain functions of pacsflow and models,
adding retries on transient errors, logging and caching."""
