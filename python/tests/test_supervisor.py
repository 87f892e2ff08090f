from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

from trine.supervisor import ServiceSpec, Supervisor


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is not running.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_output_is_prefixed_and_logged(tmp_path: Path) -> None:
    console = io.StringIO()
    sup = Supervisor(console=console, log_dir=tmp_path)
    svc = sup.start(
        ServiceSpec("echoer", [sys.executable, "-c", "print('hello')"], dict(os.environ))
    )
    svc.proc.wait(10)
    sup.stop_all()
    assert "[echoer] hello\n" in console.getvalue()
    assert (tmp_path / "echoer.log").read_text() == "hello\n"
    assert svc.exited() == 0


def test_stop_ends_children_and_grandchildren(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(300)\n"
    )
    sup = Supervisor(console=None)
    svc = sup.start(ServiceSpec("parent", [sys.executable, "-c", script], dict(os.environ)))
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    assert _alive(grandchild)
    sup.stop_all()
    assert svc.exited() is not None
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_first_exited_names_the_dead_service() -> None:
    sup = Supervisor(console=None)
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
    sup.start(ServiceSpec("sleeper", sleeper, dict(os.environ)))
    dead = sup.start(ServiceSpec("crasher", [sys.executable, "-c", "raise SystemExit(3)"], {}))
    dead.proc.wait(10)
    try:
        found = sup.first_exited()
        assert found is dead and found.exited() == 3
    finally:
        sup.stop_all()


def test_a_service_stopped_on_purpose_is_not_failed_and_restarts() -> None:
    sup = Supervisor(console=None)
    spec = ServiceSpec("sleeper", [sys.executable, "-c", "import time; time.sleep(300)"], {})
    first = sup.start(spec)
    sup.stop("sleeper")
    assert first.exited() is not None
    assert sup.first_exited() is None
    second = sup.restart("sleeper")
    assert second.proc.pid != first.proc.pid and second.exited() is None
    second.proc.kill()
    second.proc.wait(10)
    assert sup.first_exited() is second
    sup.stop_all()
