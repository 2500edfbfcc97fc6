"""AI models of the pathways: networks, pre/post-processing, training on synthetic
studies, evaluation, and the MLflow registry (register, approve, promote, roll back, load).

Plain Python and torch/MONAI; never imports Prefect, flows, tasks or deployments.
"""
