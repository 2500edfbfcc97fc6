"""The gateway starts runs by deployment name; the catalogue must register those names."""

from deployments.catalog import CATALOG
from pacsflow.gateway.dispatcher import DEPLOYMENTS


def test_every_dispatched_pathway_has_a_registered_deployment() -> None:
    registered = {spec.pathway: spec.full_name for spec in CATALOG}
    assert registered == DEPLOYMENTS
