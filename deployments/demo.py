"""`make demo` / `pacsflow demo`: stroke triage end to end on the embedded stack.

Starts Orthanc, Prefect, MLflow, the gateway and the warm runner on free loopback ports
(state under var/demo), registers and approves the shipped models, makes three head CTs (a
hemorrhage, a normal study, a contrast CT), sends each to the archive and to the gateway by
C-STORE, waits for the pathway, and prints what happened. Local test doubles play the RIS
(MLLP), the EHR (FHIR R4) and a paging endpoint, and show what they received.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pacsflow.config import Settings
from pacsflow.config.settings import write_settings
from pacsflow.db.session import make_engine, make_sessionmaker
from pacsflow.db.tables import PathwayRun, Writeback
from pacsflow.fhir.test_server import run_fhir_test_server
from pacsflow.hl7.test_peer import RecordingRisPeer
from pacsflow.orchestration.prefect_api import PrefectApi
from pacsflow.stack import stack
from pacsflow.testing.receivers import NotificationReceiver
from pacsflow.testing.services import isolated_settings, storescu

CASES = [
    ("hemorrhage", {"hemorrhages": "subdural:25:left"}),
    ("normal", {}),
    ("contrast", {"contrast": True}),
]


def make_studies(out: Path) -> list[tuple[str, Any]]:
    from pacsflow.synth.phantoms import Hemorrhage
    from pacsflow.synth.studies import write_head_ct_study

    studies = []
    for seed, (label, spec) in enumerate(CASES, start=101):
        hemorrhages = ()
        if "hemorrhages" in spec:
            subtype, volume, side = spec["hemorrhages"].split(":")
            hemorrhages = (Hemorrhage(subtype=subtype, volume_ml=float(volume), side=side),)
        truth = write_head_ct_study(
            out / label,
            seed=seed,
            hemorrhages=hemorrhages,
            contrast=bool(spec.get("contrast")),
            protocol="thick",
        )
        studies.append((label, truth))
    return studies


def wait_for_outcomes(
    settings: Settings, study_uids: list[str], timeout_s: float
) -> dict[str, PathwayRun]:
    sessions = make_sessionmaker(make_engine(settings.database_url))
    deadline = time.monotonic() + timeout_s
    done: dict[str, PathwayRun] = {}
    while time.monotonic() < deadline and len(done) < len(study_uids):
        with sessions() as session:
            for row in session.scalars(
                select(PathwayRun).where(PathwayRun.study_uid.in_(study_uids))
            ):
                if row.study_uid not in done:
                    done[row.study_uid] = row
                    print(f"  outcome for ...{row.study_uid[-12:]}: {row.outcome}")
        time.sleep(0.5)
    return done


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def time_to_flag(run: PathwayRun) -> float | None:
    t = run.timings or {}
    ends = [v for k, v in t.items() if k.endswith("_done") and v]
    return _seconds(t.get("received"), max(ends)) if ends else None


def print_table(
    settings: Settings, studies: list[tuple[str, Any]], runs: dict[str, PathwayRun]
) -> None:
    sessions = make_sessionmaker(make_engine(settings.database_url))
    print()
    header = (
        f"{'case':11} {'accession':14} {'priority':13} {'findings':40} {'written to':38} "
        f"{'time-to-flag':>12}"
    )
    print(header)
    print("-" * len(header))
    for label, truth in studies:
        run = runs.get(truth.study_uid)
        with sessions() as session:
            written = sorted(
                {
                    w.target
                    for w in session.scalars(
                        select(Writeback).where(Writeback.study_uid == truth.study_uid)
                    )
                }
            )
        if run is None:
            print(f"{label:11} {truth.accession_number:14} {'(no outcome)':13}")
            continue
        findings = "; ".join(run.reasons)[:40]
        ttf = time_to_flag(run)
        where = ", ".join([*written, "worklist"])
        flag = f"{ttf:.1f} s" if ttf is not None else "-"
        print(
            f"{label:11} {truth.accession_number:14} {run.outcome:13} {findings:40} "
            f"{where:38} {flag:>12}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--var-dir", type=Path, default=Path("var/demo"))
    parser.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for results")
    args = parser.parse_args(argv)

    if args.var_dir.exists():
        old = Path(args.var_dir / "pacsflow.toml")
        if old.exists():
            os.environ["PACSFLOW_CONFIG_FILE"] = str(old.resolve())
            from pacsflow.config import load_settings

            stack.down(load_settings(), echo=lambda _m: None)
        shutil.rmtree(args.var_dir)
    args.var_dir.mkdir(parents=True)

    with (
        RecordingRisPeer.in_background() as ris,
        run_fhir_test_server() as ehr,
        NotificationReceiver() as pager,
    ):
        settings = isolated_settings(
            args.var_dir.resolve(),
            orthanc={"stable_age_s": 5},
            ris={"mllp_port": ris.port},
            ehr={"fhir_base_url": ehr.url},
            notify={"endpoints": [pager.url]},
            gateway={"stable_window_s": {"default": 5.0}},
        )
        config = write_settings(settings, args.var_dir / "pacsflow.toml")
        os.environ["PACSFLOW_CONFIG_FILE"] = str(config.resolve())
        print("== registering and approving the shipped models (MLflow)")
        from models.bootstrap import ensure_registered

        for name, info in ensure_registered(settings.mlflow_tracking_uri).items():
            print(
                f"  {name}: v{info.version} champion, approved by {info.approval.approved_by if info.approval else '-'}"
            )
        print("== starting the stack")
        stack.up(settings)
        try:
            api = PrefectApi(settings.prefect.effective_api_url)
            deadline = time.monotonic() + 120
            while True:
                try:
                    api.deployment_id("stroke-triage/stroke-triage")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            print("== making three synthetic head CTs")
            studies = make_studies(args.var_dir / "studies")
            for label, truth in studies:
                print(
                    f"  {label:11} study ...{truth.study_uid[-12:]} accession {truth.accession_number}"
                )
            print("== sending them to the archive and to the gateway (C-STORE, storescu)")
            for label, truth in studies:
                folder = args.var_dir / "studies" / label
                for port, aet in (
                    (settings.orthanc.dicom_port, settings.orthanc.aet),
                    (settings.gateway.dicom_port, settings.gateway.aet),
                ):
                    done = storescu(settings, folder, port=port, called_aet=aet)
                    if done.returncode != 0:
                        print(done.stderr, file=sys.stderr)
                        return 1
            print(
                f"== waiting for the pathway (stable window {settings.gateway.stable_window_s['default']} s)"
            )
            runs = wait_for_outcomes(settings, [t.study_uid for _, t in studies], args.timeout)
            print_table(settings, studies, runs)
            print()
            print(f"RIS (MLLP test double) received {len(ris.received)} message(s):")
            for item in ris.received:
                m = item.message
                print(f"  {m.message_type:8} control {m.msh.field(10)} -> {item.answer}")
            print(
                f"EHR (FHIR test double) holds: {ehr.store.summary() if hasattr(ehr.store, 'summary') else ''}"
            )
            print(f"Paging endpoint received {len(pager.received)} critical alert(s):")
            for body in pager.received:
                print(f"  {body['summary']}  {body['link']}")
            print()
            print(f"Orthanc explorer: {settings.orthanc.base_url}/app/explorer.html")
            print(f"Prefect UI:       {settings.prefect.ui_url}")
            print(f"MLflow UI:        http://{settings.mlflow.host}:{settings.mlflow.port}")
            if args.keep:
                print("--keep: stack left running; Ctrl-C to stop")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
            ok = len(runs) == len(studies) and all(r.outcome != "failed" for r in runs.values())
            return 0 if ok else 1
        finally:
            print("== stopping the stack")
            stack.down(settings)


if __name__ == "__main__":
    raise SystemExit(main())
