"""pacsflow: governed AI orchestration for enterprise imaging.

The platform package is plain Python: settings, domain types, protocol clients and
servers, the gateway, governance and the CLI. It never imports Prefect objects; flows
are started by deployment name through Prefect's REST API.
"""

__version__ = "0.1.0"
