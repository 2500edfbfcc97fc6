"""`make demo` / `pacsflow demo`: stroke triage end to end on the embedded stack.

Starts Orthanc, Prefect, MLflow, the gateway and the warm runner on free loopback ports
(state under var/demo), registers and approves the shipped models, makes three head CTs (a
hemorrhage, a normal study, a contrast CT), sends each to the archive and to the gateway by
C-STORE, waits for the pathway, and prints what happened. Local test doubles play the RIS
(MLLP), the EHR (FHIR R4) and a paging endpoint, and show what they received.
"""

from __future__ import annotations

import argparse
import shutil
import time
from datetime import datetime
from pathlib import Path

from deployments.local_stack import LocalStack, local_stack
from pacsflow.config import load_settings
from pacsflow.db.tables import PathwayRun
from pacsflow.synth.phantoms import Hemorrhage
from pacsflow.synth.studies import write_head_ct_study
from pacsflow.synth.truth import StudyTruth

DEMO_PASSWORD = "demo-password-only-on-loopback"

CASES: list[tuple[str, dict[str, object]]] = [
    ("hemorrhage", {"hemorrhages": (Hemorrhage(subtype="subdural", volume_ml=25.0, side="left"),)}),
    ("normal", {}),
    ("contrast", {"contrast": True}),
]


def make_studies(out: Path, matrix: int) -> list[tuple[str, StudyTruth]]:
    return [
        (label, write_head_ct_study(out / label, seed=seed, matrix=matrix, **spec))  # type: ignore[arg-type]
        for seed, (label, spec) in enumerate(CASES, start=101)
    ]


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def time_to_flag(run: PathwayRun) -> float | None:
    """From the last instance received to the last writeback done."""
    t = run.timings or {}
    ends = [v for k, v in t.items() if k.endswith("_done") and v]
    return _seconds(t.get("received"), max(ends)) if ends else None


def print_table(
    local: LocalStack, studies: list[tuple[str, StudyTruth]], runs: dict[str, PathwayRun]
) -> None:
    header = f"{'case':11} {'accession':11} {'priority':13} {'time-to-flag':>12}  result"
    print("\n" + header + "\n" + "-" * 100)
    for label, truth in studies:
        run = runs.get(truth.study_uid)
        if run is None:
            print(f"{label:11} {truth.accession_number:11} {'(no outcome)':13}")
            continue
        ttf = time_to_flag(run)
        flag = f"{ttf:.1f} s" if ttf is not None else "-"
        print(
            f"{label:11} {truth.accession_number:11} {run.outcome:13} {flag:>12}  "
            + "; ".join(run.reasons)
        )
        targets = sorted(w.target for w in local.writebacks(truth.study_uid))
        print(f"{'':50}written: worklist, {', '.join(targets) or 'nothing else'}")
        if truth.lesions:
            lesion = truth.lesions[0]
            print(
                f"{'':50}ground truth: {lesion.subtype} {lesion.volume_ml:.1f} mL, "
                f"{lesion.location.side}"
            )


def report_receivers(local: LocalStack) -> None:
    print(f"\nRIS (MLLP test double) received {len(local.ris.received)} message(s):")
    for item in local.ris.received:
        msg = item.message
        obx = [seg.to_er7()[:90] for seg in msg.all("OBX")][:3]
        print(f"  {msg.message_type:8} answered {item.answer}")
        for line in obx:
            print(f"      {line}")
    resources = {
        kind: len(local.ehr.store.search(kind, []))
        for kind in ("DiagnosticReport", "Observation", "Flag")
    }
    print(f"EHR (FHIR R4 test double) holds: {resources}")
    print(f"Paging endpoint received {len(local.pager.received)} critical alert(s):")
    for body in local.pager.received:
        print(f"  {body['summary']}\n    {body['link']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--var-dir", type=Path, default=Path("var/demo"))
    parser.add_argument("--matrix", type=int, default=512, help="image matrix (512 = clinical)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for results")
    args = parser.parse_args(argv)
    if args.var_dir.exists():
        shutil.rmtree(args.var_dir)
    args.var_dir.mkdir(parents=True)

    print("== starting the stack (Orthanc, Prefect, MLflow, gateway, warm runner)")
    # The demo registers the shipped models in the default registry (var/mlflow), so that
    # `pacsflow models list` afterwards shows them with their approved champions.
    registry_uri = load_settings().mlflow_tracking_uri
    with local_stack(
        args.var_dir,
        stable_window_s=5.0,
        echo=lambda m: print("  " + m),
        mlflow={"tracking_uri": registry_uri},
    ) as local:
        s = local.settings
        print("== making three synthetic head CTs (scout, 5 mm soft tissue, bone series)")
        studies = make_studies(args.var_dir / "studies", args.matrix)
        for label, truth in studies:
            print(f"  {label:11} accession {truth.accession_number}  study {truth.study_uid}")
        print("== sending them by C-STORE (storescu) to the archive and to the gateway")
        for label, _truth in studies:
            local.send(args.var_dir / "studies" / label)
        print(
            f"== waiting for stroke triage (study closes {s.gateway.stable_window_s['default']}"
            " s after its last instance)"
        )
        started = time.monotonic()
        runs = local.wait_outcomes(
            [t.study_uid for _, t in studies],
            args.timeout,
            on_outcome=lambda r: print(
                f"  +{time.monotonic() - started:5.1f} s  ...{r.study_uid[-10:]}: {r.outcome}"
            ),
        )
        print_table(local, studies, runs)
        report_receivers(local)
        print(
            f"\nOrthanc explorer: {s.orthanc.base_url}/app/explorer.html "
            f"(user {s.orthanc.username})"
        )
        print(f"Prefect UI:       {s.prefect.ui_url}")
        print(f"MLflow UI:        http://{s.mlflow.host}:{s.mlflow.port}")
        if args.keep:
            print("--keep: the stack stays up until Ctrl-C")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        print("== stopping the stack")
        ok = len(runs) == len(studies) and all(r.outcome != "failed" for r in runs.values())
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
