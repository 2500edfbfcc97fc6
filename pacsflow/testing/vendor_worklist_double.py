"""TEST DOUBLE: a vendor reading-worklist REST API stand-in, for tests and the demo.

Not any real vendor's API and not for production use. It plays the generic shape that
`pacsflow.writeback.worklist_adapters.RestWorklistAdapter` speaks:
``PUT|POST|PATCH /api/worklist/{accession}/priority`` with a JSON body holding "priority",
answered 200 with the stored entry. `answer_next` makes it fail on purpose (503, 400, ...),
`token` makes it demand ``Authorization: Bearer <token>``. Real HTTP on loopback.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PATH = re.compile(r"^/api/worklist/(?P<accession>[^/]+)/priority$")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int  # what the double answered


@dataclass
class VendorWorklistDouble:
    """Records every request; `priorities` holds the accepted priority per accession."""

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    priorities: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._planned: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length) if length else b""
                status, answer = outer._answer(self.command, self.path, dict(self.headers), raw)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_PUT = do_POST = do_PATCH = _handle  # http.server dispatches on do_<METHOD>

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url_template(self) -> str:
        """What to configure as `worklist.rest_url`."""
        return self.base_url + "/api/worklist/{accession_number}/priority"

    def answer_next(self, *statuses: int) -> None:
        """Answer the next requests with these HTTP statuses (then 200 again)."""
        with self._lock:
            self._planned.extend(statuses)

    def delivered(self) -> list[RecordedRequest]:
        """The requests that were accepted (2xx)."""
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def _answer(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            status, answer = self._decide(path, headers, raw)
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = raw.decode(errors="replace")
            self.requests.append(RecordedRequest(method, path, headers, body, status))
            return status, answer

    def _decide(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        if self._planned:
            status = self._planned.pop(0)
            return status, {"error": f"planned answer {status}"}
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"error": "missing or wrong bearer token"}
        match = _PATH.match(path)
        if match is None:
            return 404, {"error": f"no such resource {path}"}
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError:
            return 400, {"error": "body is not JSON"}
        if not isinstance(body, dict) or not isinstance(body.get("priority"), str):
            return 400, {"error": "body needs a string 'priority'"}
        accession = match["accession"]
        self.priorities[accession] = body["priority"]
        return 200, {"accession": accession, "priority": body["priority"]}

    def __enter__(self) -> VendorWorklistDouble:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
