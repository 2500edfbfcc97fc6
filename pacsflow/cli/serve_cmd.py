"""`pacsflow serve`: run the warm flow runner (deployments.serve) in the foreground.

The platform does not import flows (the layering of DESIGN.md); it starts the runner as
its own process by module name, exactly as `pacsflow stack up` does in the background.
"""

from __future__ import annotations

import argparse
import os
import sys

from pacsflow.config import Settings
from pacsflow.config.settings import WORKER_POOLS
from pacsflow.stack.services import app_env


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="register the pathway deployments and run their flow runs (warm worker)",
        description="Registers pacsflow's Prefect deployments, each in the work pool of its "
        "pathway (workers.routes), and executes the runs of the pools it serves in one "
        "long-lived process, so models stay loaded between runs. A runner of the gpu pool "
        "uses CUDA when a device is present.",
    )
    add_runner_options(p)
    p.set_defaults(handler=run_serve)

    demo = sub.add_parser(
        "demo",
        help="run stroke triage end to end on a throw-away local stack (what `make demo` does)",
        description="Starts every service on free loopback ports under var/demo, registers the "
        "shipped models, sends three synthetic head CTs by C-STORE and prints what the pathway "
        "wrote where, with the time from the last image received to the flag.",
    )
    demo.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    demo.add_argument("--matrix", type=int, default=512, help="image matrix (512 = clinical)")
    demo.set_defaults(handler=run_demo)


def add_runner_options(parser: argparse.ArgumentParser) -> None:
    """--pool and --concurrency, shared by `pacsflow serve` and `python -m deployments.serve`."""
    parser.add_argument(
        "--pool",
        action="extend",
        type=pool_list,
        help="work pool(s) whose runs this runner claims: cpu, gpu or cpu,gpu (repeatable; "
        "default: every pool)",
    )
    parser.add_argument(
        "--concurrency", type=int, help="flow runs at once (default: workers.concurrency)"
    )


def pool_list(text: str) -> list[str]:
    """A --pool value: "cpu", "gpu", or both comma-separated ("cpu,gpu", what a compose
    file can put in one argument from one variable)."""
    pools = [p.strip() for p in text.split(",") if p.strip()]
    if not pools or any(p not in WORKER_POOLS for p in pools):
        raise argparse.ArgumentTypeError(
            f"invalid pool {text!r}: choose from {', '.join(WORKER_POOLS)} (comma-separated)"
        )
    return pools


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    env = {**os.environ, **app_env(settings)}
    concurrency = args.concurrency or settings.workers.concurrency
    argv = [sys.executable, "-m", "deployments.serve", "--concurrency", str(concurrency)]
    if args.pool:
        argv += ["--pool", ",".join(args.pool)]
    os.execve(sys.executable, argv, env)
    return 0  # not reached


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    argv = [sys.executable, "-m", "deployments.demo", "--matrix", str(args.matrix)]
    if args.keep:
        argv.append("--keep")
    os.execv(sys.executable, argv)
    return 0  # not reached
