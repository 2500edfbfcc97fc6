"""Time-to-flag of stroke triage on the whole local stack, and orchestration overhead.

Time-to-flag = from the last instance received by the gateway to the last writeback done
(SR stored, worklist updated, ORU acknowledged, FHIR posted). It includes the stable window
that closes a study (5 s here, as in the issue's goal). Measured for single studies one at
a time and for a burst of N studies sent together. Clinical 512x512x36 (5 mm) head CTs with
their scout and bone series; half with a hemorrhage.

Orchestration overhead: the same studies through the Prefect flow (the flow run's own
duration, from its start to its outcome) against the pathway's plain functions called
directly in this process, per study.

    python -m bench.bench_time_to_flag [--single 5] [--burst 20] [--matrix 512]
Output: JSON on stdout and bench/results/time_to_flag.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import summary, write_result
from deployments.local_stack import LocalStack, local_stack
from pacsflow.db.tables import PathwayRun
from pacsflow.synth.phantoms import Hemorrhage
from pacsflow.synth.studies import write_head_ct_study


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


def time_to_flag(run: PathwayRun) -> float:
    t = run.timings
    done = max(_iso(v) for k, v in t.items() if k.endswith("_done") and v)
    return (done - _iso(t["received"])).total_seconds()


def flow_seconds(run: PathwayRun) -> float:
    t = run.timings
    done = max(_iso(v) for k, v in t.items() if k.endswith("_done") and v)
    return (done - _iso(t["started"])).total_seconds()


def make(out: Path, seed: int, matrix: int) -> tuple[Path, str]:
    hemorrhages = (
        (Hemorrhage(subtype="intraparenchymal", volume_ml=12.0, side="left"),) if seed % 2 else ()
    )
    truth = write_head_ct_study(out, seed=seed, hemorrhages=hemorrhages, matrix=matrix)
    return out, truth.study_uid


def run_single(local: LocalStack, work: Path, n: int, matrix: int) -> list[PathwayRun]:
    runs = []
    for i in range(n):
        folder, uid = make(work / f"single{i}", 1000 + i, matrix)
        local.send(folder)
        found = local.wait_outcomes([uid], 300)
        runs.append(found[uid])
    return runs


def run_burst(local: LocalStack, work: Path, n: int, matrix: int) -> tuple[list[PathwayRun], float]:
    from concurrent.futures import ThreadPoolExecutor

    studies = [make(work / f"burst{i}", 2000 + i, matrix) for i in range(n)]
    started = time.monotonic()
    # A real burst: every study sent at once, one storescu per study and target.
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(lambda item: local.send(item[0], to_archive=True), studies))
    sent_s = time.monotonic() - started
    print(f"burst of {n} sent concurrently in {sent_s:.1f} s", flush=True)
    found = local.wait_outcomes([uid for _, uid in studies], 900)
    return list(found.values()), time.monotonic() - started


def direct_seconds(local: LocalStack, folders: list[Path]) -> list[float]:
    """The pathway's plain functions, called directly (no Prefect), on studies already in
    the archive: select, validate, infer (warm), decide, SR/SEG build (no writes)."""
    import pydicom

    from models.ich.analyse import analyse_series
    from models.registry import load_by_alias
    from pacsflow.config.settings import TriageSettings
    from pacsflow.dicom.sr import build_sr
    from pacsflow.domain import ModelRef
    from pacsflow.pathways.headers import InstanceHeader
    from pacsflow.pathways.series_selection import HEAD_SERIES, select_series
    from pacsflow.pathways.triage import decide
    from pacsflow.pathways.validation import validate_headers

    segmenter, info = load_by_alias(local.settings.mlflow_tracking_uri, "pacsflow-ich")
    model = ModelRef(name=info.name, version=info.version, approved=info.approved)
    samples = []
    for folder in folders:
        started = time.perf_counter()
        datasets = [pydicom.dcmread(f) for f in sorted(folder.rglob("*.dcm"))]
        headers = [InstanceHeader.from_dataset(d) for d in datasets]
        choice = select_series(headers, HEAD_SERIES)
        chosen = [d for d in datasets if str(d.SeriesInstanceUID) == choice.series_uid]
        validate_headers([h for h in headers if h.series_uid == choice.series_uid])
        result, _labels, _volume = analyse_series(chosen, segmenter, model)
        decision = decide(result, TriageSettings())
        build_sr(
            chosen,
            result.findings,
            model,
            seg=None,
            study_probability=result.study_probability,
            priority=decision.priority,
            finding_kind="hemorrhage",
        )
        samples.append(time.perf_counter() - started)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--single", type=int, default=5)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--matrix", type=int, default=512)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pacsflow-ttf-"))
    try:
        with local_stack(work / "var", stable_window_s=5.0) as local:
            # Warm the runner (first study pays for model loading, as on any new worker).
            folder, uid = make(work / "warm", 999, args.matrix)
            local.send(folder)
            local.wait_outcomes([uid], 300)

            single = run_single(local, work, args.single, args.matrix)
            burst, burst_wall = run_burst(local, work, args.burst, args.matrix)
            flows = [flow_seconds(r) for r in single]
            direct = direct_seconds(local, [work / f"single{i}" for i in range(args.single)])
        data: dict[str, Any] = {
            "study": f"head CT {args.matrix}x{args.matrix}x36 (5 mm) + scout + bone series",
            "stable_window_s": 5.0,
            "single": summary([time_to_flag(r) for r in single]),
            "single_outcomes": [r.outcome for r in single],
            "burst": {
                "studies": args.burst,
                "flagged": len(burst),
                "time_to_flag": summary([time_to_flag(r) for r in burst]) if burst else None,
                "wall_s": round(burst_wall, 1),
            },
            "orchestration": {
                "through_prefect_flow_s": summary(flows),
                "direct_functions_s": summary(direct),
                "overhead_per_study_s": round(
                    summary(flows)["median_s"] - summary(direct)["median_s"], 3
                ),
                "note": "flow time includes the real writebacks (STOW, MLLP, FHIR); direct "
                "builds the SR but does not send it",
            },
            "goals": {"single_p95_s": 15, "burst_p95_s": 90, "overhead_s": 1.5},
        }
        write_result("time_to_flag", data)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
