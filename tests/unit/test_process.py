import socket
import sys
from pathlib import Path

import pytest

from pacsflow.errors import StackError
from pacsflow.stack.process import ManagedProcess, free_port, pid_alive


def _sleeper(tmp_path: Path, ports: list[tuple[str, int]] | None = None) -> ManagedProcess:
    return ManagedProcess(
        name="sleeper",
        argv=[sys.executable, "-c", "import time; time.sleep(60)"],
        run_dir=tmp_path / "run",
        log_dir=tmp_path / "log",
        ports=ports or [],
        ready=lambda: True,
        stop_timeout_s=5,
    )


def test_start_stop_leaves_no_process(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path)
    pid = proc.start()
    assert proc.is_running()
    assert proc.start() == pid  # a second start is a no-op
    assert proc.stop()
    assert not pid_alive(pid)
    assert not proc.pid_file.exists()
    assert not proc.stop()


def test_stale_pid_file_is_cleared(tmp_path: Path) -> None:
    proc = _sleeper(tmp_path)
    proc.run_dir.mkdir(parents=True)
    proc.pid_file.write_text("999999")  # no such process
    assert proc.pid() is None
    assert not proc.pid_file.exists()


def test_busy_port_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        proc = _sleeper(tmp_path, ports=[("127.0.0.1", port)])
        with pytest.raises(StackError, match=f"127.0.0.1:{port} already in use"):
            proc.start()


def test_process_dying_at_start_reports_its_log(tmp_path: Path) -> None:
    proc = ManagedProcess(
        name="crasher",
        argv=[sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"],
        run_dir=tmp_path / "run",
        log_dir=tmp_path / "log",
        ports=[],
        ready=lambda: False,
        start_timeout_s=10,
    )
    proc.start()
    with pytest.raises(StackError, match="bad config"):
        proc.wait_ready()
