"""Every pacsflow deployment: its flow, its name, its tags. The gateway starts runs by
these names ("flow-name/deployment-name"); keep them in step with
pacsflow.gateway.dispatcher.DEPLOYMENTS (a test checks it).

Three kinds: dispatched by the gateway (one run per study), scheduled (a cron), and on
demand (``dispatched=False`` without a cron: started from the Prefect UI or the CLI with
parameters, e.g. an archive sweep)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import Flow

from flows.archive_sweep import archive_sweep
from flows.drift_monitor import drift_monitor
from flows.nodule_followup import nodule_followup
from flows.screening_cohort import screening_cohort
from flows.stroke_triage import stroke_triage


@dataclass(frozen=True)
class DeploymentSpec:
    pathway: str
    flow: Flow[..., Any]
    name: str
    description: str
    tags: list[str] = field(default_factory=list)
    cron: str | None = None
    dispatched: bool = True  # the gateway starts its runs (pacsflow.gateway.dispatcher)

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
    DeploymentSpec(
        pathway="nodule_followup",
        flow=nodule_followup,
        name="nodule-followup",
        description="Chest CT -> nodule model -> priors from the archive -> growth -> "
        "Lung-RADS / Fleischner -> SR with comparison, ORU draft, FHIR report and coordinator "
        "Task, worklist priority. Triggered by the gateway for each closed chest CT study.",
        tags=["pathway", "nodule"],
    ),
    DeploymentSpec(
        pathway="drift_monitor",
        flow=drift_monitor,
        name="drift-stroke-triage",
        description="Scheduled drift check of stroke triage: the latest inferences against "
        "the ICH model's reference profile (PSI, KS, not-analysed rate, latency p95); "
        "metrics to MLflow (experiment pacsflow-drift), HTML report under "
        "var/reports/drift/, and past the thresholds a notification and an audit entry "
        "drift.alert. Not dispatched by the gateway.",
        tags=["governance", "drift"],
        cron="17 * * * *",
        dispatched=False,
    ),
    DeploymentSpec(
        pathway="screening_cohort",
        flow=screening_cohort,
        name="screening-cohort-nightly",
        description="Nightly screening cohort: continues the sweep of the archive's chest CTs "
        "(checkpoint), reads each patient's smoking history and enrolments from the EHR "
        "(FHIR R4), applies the USPSTF 2021 lung cancer and 2019 AAA screening criteria, "
        "flags eligible not-enrolled patients in the EHR (FHIR Flag + Task, once), lists "
        "enrolled patients overdue for their next LDCT (Lung-RADS interval), and writes the "
        "coordinator report (CSV + HTML) under var/reports/screening/. Parameters: start/end "
        "or last_days, sweep name, as_of, dry_run. Not dispatched by the gateway.",
        tags=["population-health", "screening", "sweep"],
        cron="30 2 * * *",
        dispatched=False,
    ),
    DeploymentSpec(
        pathway="archive_sweep",
        flow=archive_sweep,
        name="archive-sweep",
        description="On demand (Prefect UI: Run with parameters, or `pacsflow sweep start`): "
        "runs a pathway (stroke_triage, nodule_followup) retrospectively over the archive's "
        "studies of a date range and filter, skipping studies already processed by the "
        "champion version, at most max_in_flight pathway runs at once so live work keeps "
        "priority; resumable by sweep name. While a challenger model version exists it reads "
        "the same studies in shadow mode (no writeback) and logs the agreement report to "
        "MLflow (experiment pacsflow-shadow).",
        tags=["sweep", "retrospective", "shadow"],
        dispatched=False,
    ),
]
