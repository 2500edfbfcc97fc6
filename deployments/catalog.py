"""Every pacsflow deployment: its flow, its name, its tags. The gateway starts runs by
these names ("flow-name/deployment-name"); keep them in step with
pacsflow.gateway.dispatcher.DEPLOYMENTS (a test checks it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import Flow

from flows.stroke_triage import stroke_triage


@dataclass(frozen=True)
class DeploymentSpec:
    pathway: str
    flow: Flow[..., Any]
    name: str
    description: str
    tags: list[str] = field(default_factory=list)
    cron: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.flow.name}/{self.name}"


CATALOG: list[DeploymentSpec] = [
    DeploymentSpec(
        pathway="stroke_triage",
        flow=stroke_triage,
        name="stroke-triage",
        description="Non-contrast head CT -> ICH model -> SR/SEG, ORU, worklist, FHIR, alert. "
        "Triggered by the gateway's outbox for each closed head CT study; runnable by hand "
        "from the Prefect UI with a study UID.",
        tags=["pathway", "stroke"],
    ),
]
