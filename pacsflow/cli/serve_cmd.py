"""`pacsflow serve`: run the warm flow runner (deployments.serve) in the foreground.

The platform does not import flows (the layering of DESIGN.md); it starts the runner as
its own process by module name, exactly as `pacsflow stack up` does in the background.
"""

from __future__ import annotations

import argparse
import os
import sys

from pacsflow.config import Settings
from pacsflow.stack.services import app_env


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="register the pathway deployments and run their flow runs (warm worker)",
        description="Registers pacsflow's Prefect deployments and executes their runs in "
        "one long-lived process, so models stay loaded between runs.",
    )
    p.add_argument("--concurrency", type=int, default=2, help="flow runs at once (default 2)")
    p.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    env = {**os.environ, **app_env(settings)}
    argv = [sys.executable, "-m", "deployments.serve", "--concurrency", str(args.concurrency)]
    os.execve(sys.executable, argv, env)
    return 0  # not reached
