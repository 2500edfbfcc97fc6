"""The `pacsflow` console script: one entry point, one module per command group."""
