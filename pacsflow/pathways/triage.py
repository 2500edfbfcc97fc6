"""Critical / urgent / routine / human review, from findings and configured thresholds."""

from __future__ import annotations

from pacsflow.config.settings import TriageSettings
from pacsflow.domain import InferenceResult, Priority, TriageDecision


def decide(result: InferenceResult, thresholds: TriageSettings) -> TriageDecision:
    """The uncertain band goes to a human before anyone is alerted."""
    p = result.study_probability
    volume = sum(f.volume_ml or 0.0 for f in result.findings)
    if p >= thresholds.critical_probability and result.findings:
        if volume >= thresholds.critical_volume_ml:
            return TriageDecision(
                priority=Priority.CRITICAL,
                reasons=[f"hemorrhage {volume:.1f} mL, probability {p:.2f}"],
            )
        if volume >= thresholds.urgent_volume_ml:
            return TriageDecision(
                priority=Priority.URGENT,
                reasons=[f"small hemorrhage {volume:.2f} mL, probability {p:.2f}"],
            )
    if p >= thresholds.uncertain_low:
        return TriageDecision(
            priority=Priority.REVIEW,
            reasons=[f"uncertain: probability {p:.2f}, volume {volume:.2f} mL"],
        )
    return TriageDecision(priority=Priority.ROUTINE, reasons=[f"no hemorrhage (p={p:.2f})"])
