"""The pure core of the clinical pathways: series selection, validation, decisions.

Plain typed functions, no Prefect: the tasks in tasks/ wrap them with retries and logging.
"""
