"""C-STORE ingest of a 64-instance CT study (dcmtk storescu as the modality) into:

- pacsflow's gateway (each instance fsync'd to the spool before success),
- dcmtk storescp (the baseline DICOM receiver; writes files, no fsync),
- Orthanc (the archive),

all on this machine, in one run, as ratios; then the gateway's peak RSS under a burst of
20 studies sent concurrently. Output: JSON on stdout and bench/results/ingest.json.

    python -m bench.bench_ingest [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import peak_rss_mb, summary, timed, write_result
from pacsflow.stack.process import ManagedProcess, free_port
from pacsflow.stack.services import DCMTK_ENV, gateway_service, orthanc_service
from pacsflow.testing.dicom_factory import write_tiny_study
from pacsflow.testing.services import isolated_settings


def send(port: int, aet: str, folder: Path) -> None:
    done = subprocess.run(
        ["storescu", "-aec", aet, "+sd", "+r", "-nh", "127.0.0.1", str(port), str(folder)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **DCMTK_ENV},
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)


def wait_port(port: int, timeout_s: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--burst", type=int, default=20)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pacsflow-bench-"))
    try:
        settings = isolated_settings(work / "var", gateway={"stable_window_s": {"default": 3600}})
        studies = [
            write_tiny_study(work / f"study{i}", slices=64, rows=512)[1][0].parent
            for i in range(args.repeats)
        ]
        results: dict[str, dict[str, float]] = {}

        gateway = gateway_service(settings)
        gateway.start()
        gateway.wait_ready()
        results["pacsflow_gateway"] = summary(
            [timed(lambda f=f: send(settings.gateway.dicom_port, "PACSFLOW", f)) for f in studies]
        )

        scp_port = free_port()
        scp_dir = work / "storescp"
        scp_dir.mkdir()
        storescp = ManagedProcess(
            name="storescp",
            argv=["storescp", "--fork", "-od", str(scp_dir), "-aet", "STORESCP", str(scp_port)],
            env=DCMTK_ENV,  # the same TCP settings as Orthanc: a fair baseline
            run_dir=settings.paths.run_dir,
            log_dir=settings.paths.log_dir,
            ports=[("127.0.0.1", scp_port)],
            ready=lambda: True,
        )
        storescp.start()
        wait_port(scp_port)
        results["dcmtk_storescp"] = summary(
            [timed(lambda f=f: send(scp_port, "STORESCP", f)) for f in studies]
        )
        storescp.stop()

        orthanc = orthanc_service(settings)
        orthanc.start()
        orthanc.wait_ready()
        results["orthanc"] = summary(
            [timed(lambda f=f: send(settings.orthanc.dicom_port, "ORTHANC", f)) for f in studies]
        )
        orthanc.stop()

        # Burst: N distinct studies at once into the gateway; peak RSS of its process.
        burst = [
            write_tiny_study(work / f"burst{i}", slices=16, rows=512)[1][0].parent
            for i in range(args.burst)
        ]
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    "storescu",
                    "-aec",
                    "PACSFLOW",
                    "+sd",
                    "+r",
                    "-nh",
                    "127.0.0.1",
                    str(settings.gateway.dicom_port),
                    str(f),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, **DCMTK_ENV},
            )
            for f in burst
        ]
        codes = [p.wait() for p in procs]
        burst_s = time.perf_counter() - started
        gateway_pid = gateway.pid()
        rss = peak_rss_mb(gateway_pid) if gateway_pid else float("nan")
        gateway.stop()

        base = results["dcmtk_storescp"]["median_s"]
        write_result(
            "ingest",
            {
                "study": {
                    "instances": 64,
                    "matrix": "512x512",
                    "bytes_per_instance": 512 * 512 * 2,
                },
                "median_seconds": {k: v["median_s"] for k, v in results.items()},
                "detail": results,
                "ratio_to_storescp": {
                    k: round(v["median_s"] / base, 3) for k, v in results.items()
                },
                "goal": "gateway <= 1/3 of storescp's time, durably (fsync per instance)",
                "burst": {
                    "studies": args.burst,
                    "instances_each": 16,
                    "all_succeeded": all(c == 0 for c in codes),
                    "seconds": round(burst_s, 2),
                    "gateway_peak_rss_mb": round(rss, 1),
                    "goal_rss_mb": 300,
                },
            },
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
