"""Scale-out: time-to-flag p95 and studies/hour with 1, 2 and 4 warm runners, with every
database (pacsflow's, the Prefect server's, MLflow's) on PostgreSQL against all on SQLite,
in one run (issue 9).

For each backend and runner count a fresh local stack is started, warmed with one study,
then sent a burst of N small head CTs at once (one storescu per study and target). Figures:
time-to-flag (last instance received -> last writeback done) median and p95, and
throughput = studies / (first instance received -> last writeback done) * 3600.

PostgreSQL: 127.0.0.1:5432 with trust auth (the CI machine's); each configuration gets its
own fresh databases, dropped afterwards.

    python -m bench.bench_scale [--studies 40] [--workers 1 2 4] [--backends sqlite postgres]
Output: JSON on stdout and bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.bench_time_to_flag import time_to_flag
from bench.common import summary, write_result
from deployments.local_stack import LocalStack, local_stack
from pacsflow.db.tables import PathwayRun
from pacsflow.testing.dicom_factory import write_burst_head_ct
from pacsflow.testing.postgres import fresh_databases, stack_overrides


def make_study(out: Path, seed: int) -> tuple[Path, str]:
    return out, write_burst_head_ct(out, seed).study_uid


def burst(local: LocalStack, work: Path, n: int, first_seed: int) -> list[PathwayRun]:
    studies = [make_study(work / f"b{first_seed + i}", first_seed + i) for i in range(n)]
    with ThreadPoolExecutor(max_workers=min(n, 48)) as pool:
        list(pool.map(lambda item: local.send(item[0]), studies))
    found = local.wait_outcomes([uid for _, uid in studies], 1800)
    return list(found.values())


def throughput_per_hour(runs: list[PathwayRun]) -> float:
    first = min(datetime.fromisoformat(r.timings["received"]) for r in runs)
    last = max(
        datetime.fromisoformat(v) for r in runs for k, v in r.timings.items() if k.endswith("_done")
    )
    return len(runs) / max((last - first).total_seconds(), 1e-6) * 3600


def measure(backend: str, workers: int, studies: int, work: Path) -> dict[str, Any]:
    databases = (
        fresh_databases(["pacsflow", "prefect", "mlflow"]) if backend == "postgres" else _none()
    )
    with databases as dbs:
        var = work / f"{backend}-{workers}"
        overrides = stack_overrides(dbs) if dbs else {}
        with local_stack(
            var, stable_window_s=2.0, workers={"count": workers}, **overrides
        ) as local:
            burst(local, work, 1, 500)  # warm: the first study pays for model loading
            started = time.monotonic()
            runs = burst(local, work, studies, 1000 * workers + (0 if backend == "sqlite" else 500))
            wall = time.monotonic() - started
        flagged = [r for r in runs if r.outcome != "failed"]
        row: dict[str, Any] = {
            "backend": backend,
            "workers": workers,
            "studies": studies,
            "flagged": len(flagged),
            "failed": len(runs) - len(flagged),
            "wall_s": round(wall, 1),
        }
        if flagged:
            row["time_to_flag"] = summary([time_to_flag(r) for r in flagged])
            row["studies_per_hour"] = round(throughput_per_hour(flagged))
        print(row, flush=True)
        return row


@contextmanager
def _none() -> Iterator[dict[str, str]]:
    yield {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=40, help="studies per burst")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pacsflow-scale-"))
    try:
        rows = [
            measure(backend, workers, args.studies, work)
            for backend in args.backends
            for workers in args.workers
        ]
        baseline = {r["workers"]: r for r in rows if r["backend"] == "sqlite"}
        for r in rows:
            base = baseline.get(r["workers"])
            if base and "studies_per_hour" in r and "studies_per_hour" in base:
                r["throughput_vs_sqlite"] = round(
                    r["studies_per_hour"] / base["studies_per_hour"], 2
                )
            one = next(
                (x for x in rows if x["backend"] == r["backend"] and x["workers"] == 1), None
            )
            if one and "studies_per_hour" in r and "studies_per_hour" in one:
                r["throughput_vs_1_worker"] = round(
                    r["studies_per_hour"] / one["studies_per_hour"], 2
                )
        write_result(
            "scale",
            {
                "study": "head CT 256x256x12 (5 mm), one series, every third with a hemorrhage",
                "stable_window_s": 2.0,
                "runner_concurrency": 2,
                "rows": rows,
            },
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
