"""The preliminary draft report text of an AI result (for the ORU, FHIR and the SR notes)."""

from __future__ import annotations

from pacsflow.domain import InferenceResult, Priority, TriageDecision


def _where(f_side: str | None, compartment: str | None) -> str:
    parts = [p for p in (f_side, compartment) if p]
    return ", ".join(parts) if parts else "location not determined"


def draft_report(result: InferenceResult | None, decision: TriageDecision) -> str:
    lines = ["AI-GENERATED PRELIMINARY RESULT - to be confirmed by a radiologist."]
    if decision.priority == Priority.NOT_ANALYSED or result is None:
        lines.append("Study not analysed: " + "; ".join(decision.reasons))
        return "\n".join(lines)
    if not result.findings:
        lines.append("No intracranial hemorrhage detected by the algorithm.")
    for i, f in enumerate(result.findings, start=1):
        kind = f"{f.subtype} {f.kind}" if f.subtype else f.kind
        volume = f"{f.volume_ml:.1f} mL" if f.volume_ml is not None else "volume not measured"
        lines.append(
            f"Finding {i}: suspected {kind}, {volume}, "
            f"{_where(f.location.side, f.location.compartment)} (p={f.probability:.2f})."
        )
    lines.append(f"Triage: {decision.priority.value.upper()} - " + "; ".join(decision.reasons))
    lines.append(f"Algorithm: {result.model.name} version {result.model.version}.")
    return "\n".join(lines)
