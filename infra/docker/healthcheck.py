#!/usr/bin/env python3
"""Container health checks, stdlib only (a check must not pay for importing pacsflow).

    pacsflow-healthcheck http URL    exit 0 when URL answers 200 (the gateway's /health
                                     checks its database too)
    pacsflow-healthcheck runner      exit 0 when PID 1 is the warm runner (deployments.serve)
                                     and it has written its effective configuration

The runner has no HTTP port, and its health must not depend on the Prefect server: a worker
restarted because the server is briefly down would only lose its warm models.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path


def http_ok(url: str, timeout_s: float = 4.0) -> bool:
    # The probe runs inside the container against its own listener: with tls.http on, the
    # certificate names the service, not 127.0.0.1, so only the hostname check is relaxed.
    context = ssl.create_default_context()
    context.check_hostname = False
    ca_file = os.environ.get("PACSFLOW_TLS_CA_FILE")
    if ca_file:
        context.load_verify_locations(ca_file)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def runner_ok() -> bool:
    try:
        cmdline = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    var_dir = Path(os.environ.get("PACSFLOW_PATHS_VAR_DIR", "var"))
    return b"deployments.serve" in cmdline and (var_dir / "run" / "effective-config.toml").is_file()


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "http":
        return 0 if http_ok(argv[1]) else 1
    if argv == ["runner"]:
        return 0 if runner_ok() else 1
    print("usage: pacsflow-healthcheck http URL | runner", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
