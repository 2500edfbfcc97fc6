"""Entry point of the `pacsflow` console script."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pacsflow import __version__
from pacsflow.cli import (
    audit_cmd,
    config_cmd,
    gateway_cmd,
    routes_cmd,
    serve_cmd,
    spool_cmd,
    stack_cmd,
    sweep_cmd,
    users_cmd,
)
from pacsflow.config import load_settings
from pacsflow.errors import PacsflowError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pacsflow",
        description="Governed AI orchestration for imaging: listens to the PACS/VNA, RIS and "
        "EHR, runs the approved model of each clinical pathway on new and archived studies, "
        "and writes results back (DICOM SR/SEG, HL7 ORU, worklist priority, FHIR).",
        epilog="Configuration: defaults < TOML file (--config or PACSFLOW_CONFIG_FILE) < "
        "PACSFLOW_<GROUP>_<NAME> environment variables. See `pacsflow config show`.",
    )
    parser.add_argument("--version", action="version", version=f"pacsflow {__version__}")
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_cmd.add_parser(sub)
    stack_cmd.add_parser(sub)
    gateway_cmd.add_parser(sub)
    routes_cmd.add_parser(sub)
    serve_cmd.add_parser(sub)
    users_cmd.add_parser(sub)
    audit_cmd.add_parser(sub)
    sweep_cmd.add_parser(sub)
    spool_cmd.add_parser(sub)
    _add_optional_groups(sub)
    return parser


def _add_optional_groups(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from models import cli as models_cli
    from pacsflow.synth import cli as synth_cli

    synth_cli.add_parser(sub)
    models_cli.add_parser(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Request lines of the HTTP client are noise at INFO (and may carry query values).
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if args.config is not None:
        # Child services started by this command (stack up, serve) read the same file.
        os.environ["PACSFLOW_CONFIG_FILE"] = str(args.config.resolve())
    try:
        settings = load_settings(args.config)
        return int(args.handler(args, settings) or 0)
    except PacsflowError as exc:
        print(f"pacsflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
