"""The embedded one-machine stack: Orthanc, Prefect server, MLflow, pacsflow's database."""
