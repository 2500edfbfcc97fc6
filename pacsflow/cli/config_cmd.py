"""`pacsflow config show`."""

from __future__ import annotations

import argparse
import json

from pacsflow.config import Settings
from pacsflow.config.settings import masked_dump


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="show the effective configuration")
    csub = p.add_subparsers(dest="config_cmd", required=True)
    show = csub.add_parser(
        "show",
        help="print the effective configuration (defaults < TOML file < environment), "
        "secrets masked",
    )
    show.set_defaults(handler=run_show)


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(masked_dump(settings), indent=2))
    return 0
