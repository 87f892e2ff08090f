"""Start, watch and stop a set of child processes, prefixing their logs with the service name."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

STOP_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class ServiceSpec:
    """How to start one service."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]


class Service:
    """One running child process whose output is pumped, line by line, to sinks."""

    def __init__(self, spec: ServiceSpec, console: TextIO | None, log_file: Path | None) -> None:
        self.spec = spec
        self._console = console
        self._log = log_file.open("a", buffering=1) if log_file else None
        # start_new_session: the child gets its own process group, so a terminal's Ctrl-C
        # reaches only the launcher, which then stops children in order, grandchildren included.
        self.proc = subprocess.Popen(
            list(spec.argv),
            env=dict(spec.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
            errors="replace",
        )
        self._tail: list[str] = []
        # _tail_lock guards _tail, written by the pump thread and read by tail().
        self._tail_lock = threading.Lock()
        self._pump = threading.Thread(target=self._pump_lines, name=f"log-{spec.name}", daemon=True)
        self._pump.start()

    def _pump_lines(self) -> None:
        assert self.proc.stdout is not None
        prefix = f"[{self.spec.name}] "
        for line in self.proc.stdout:
            with self._tail_lock:
                self._tail.append(line)
                del self._tail[:-50]
            if self._log:
                self._log.write(line)
            if self._console:
                self._console.write(prefix + line)
                self._console.flush()
        if self._log:
            self._log.close()

    def exited(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return self.proc.poll()

    def tail(self) -> str:
        """The last lines the service printed."""
        with self._tail_lock:
            return "".join(self._tail)

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after a grace period."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Grandchildren may outlive their parent; the group id is still theirs.
        _signal_group(self.proc.pid, signal.SIGKILL)
        self._pump.join(timeout=2)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Supervisor:
    """Owns a set of services: starts them in order and stops them in reverse order."""

    def __init__(self, console: TextIO | None = sys.stdout, log_dir: Path | None = None) -> None:
        self._console = console
        self._log_dir = log_dir
        self.services: list[Service] = []
        self._stopped: set[str] = set()

    def _find(self, name: str) -> Service:
        return next(s for s in self.services if s.spec.name == name)

    def start(self, spec: ServiceSpec) -> Service:
        """Start one service and remember it for stop_all()."""
        log_file = self._log_dir / f"{spec.name}.log" if self._log_dir else None
        service = Service(spec, self._console, log_file)
        self.services.append(service)
        return service

    def restart(self, name: str) -> Service:
        """Stop service `name` (if it still runs) and start it again with the same spec."""
        old = self._find(name)
        index = self.services.index(old)
        old.stop()
        self._stopped.discard(name)
        log_file = self._log_dir / f"{name}.log" if self._log_dir else None
        self.services[index] = Service(old.spec, self._console, log_file)
        return self.services[index]

    def stop(self, name: str) -> None:
        """Stop service `name` on purpose: it no longer counts as exited (see restart)."""
        self._stopped.add(name)
        self._find(name).stop()

    def first_exited(self) -> Service | None:
        """A service that has ended without being stopped, if any (a healthy stack has none)."""
        return next(
            (
                s
                for s in self.services
                if s.exited() is not None and s.spec.name not in self._stopped
            ),
            None,
        )

    def stop_all(self) -> None:
        """Stop every service, the last started first."""
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
