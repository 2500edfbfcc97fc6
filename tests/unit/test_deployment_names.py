"""The gateway starts runs by deployment name; the catalogue must register those names.
Scheduled deployments (a cron, e.g. drift monitoring) run on their schedule and on-demand
deployments (e.g. the archive sweep) are started from the UI or the CLI: neither is
dispatched by the gateway."""

from deployments.catalog import CATALOG
from pacsflow.gateway.dispatcher import DEPLOYMENTS


def test_every_dispatched_pathway_has_a_registered_deployment() -> None:
    dispatched = {spec.pathway: spec.full_name for spec in CATALOG if spec.dispatched}
    assert dispatched == DEPLOYMENTS


def test_scheduled_deployments_are_not_dispatched() -> None:
    scheduled = [spec for spec in CATALOG if spec.cron is not None]
    assert scheduled, "the drift monitor runs on a schedule"
    for spec in scheduled:
        assert not spec.dispatched, spec.full_name
        assert spec.pathway not in DEPLOYMENTS
        assert spec.full_name not in DEPLOYMENTS.values()
        assert len((spec.cron or "").split()) == 5, spec.cron


def test_deployment_names_are_unique() -> None:
    names = [spec.full_name for spec in CATALOG]
    assert len(names) == len(set(names))


def test_on_demand_deployments_are_not_dispatched() -> None:
    on_demand = [spec for spec in CATALOG if not spec.dispatched and spec.cron is None]
    assert on_demand, "the archive sweep runs on demand"
    for spec in on_demand:
        assert spec.pathway not in DEPLOYMENTS
        assert spec.full_name not in DEPLOYMENTS.values()


def test_every_deployment_has_a_default_work_pool_route() -> None:
    """A new pathway is routed on purpose: inference on the gpu pool, the rest on cpu."""
    from pacsflow.config.settings import DEFAULT_WORKER_ROUTES

    assert {spec.pathway for spec in CATALOG} == set(DEFAULT_WORKER_ROUTES)
    for spec in CATALOG:
        expected = "gpu" if spec.dispatched else "cpu"  # the dispatched pathways infer
        assert DEFAULT_WORKER_ROUTES[spec.pathway] == expected, spec.full_name
