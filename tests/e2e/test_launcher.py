"""`trine up` (what `make run` starts): it prints working examples and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import uuid
from pathlib import Path

import httpx

from conftest import ROOT, wait_for
from trine.stack import free_port


def _processes_with(marker: str) -> list[int]:
    """Pids whose environment carries `marker` (every child inherits the launcher's env)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _curl_commands(banner: str) -> list[str]:
    """The example commands of the banner, each joined from its continued lines."""
    commands, current = [], ""
    for line in banner.splitlines():
        stripped = line.strip()
        if stripped.startswith("curl ") or current:
            current += stripped.removesuffix("\\") + " "
            if not stripped.endswith("\\"):
                commands.append(current)
                current = ""
    return commands


def test_up_serves_its_examples_and_stops_everything(tmp_path: Path) -> None:
    (tmp_path / "bin").symlink_to(ROOT / "bin")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    marker = f"e2e-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRINE_", "ANTHROPIC_"))}
    env.update({"TRINE_E2E_MARKER": marker, "TRINE_GATEWAY_ADDR": f"127.0.0.1:{free_port()}"})
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "trine"), "up", "--root", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: any("Press Ctrl-C" in line for line in output), 180), "".join(
            output
        )
        banner = "".join(output)
        key = (tmp_path / ".trine" / "dev-api-key").read_text().strip()
        assert key in banner
        assert "[gateway]" in banner and "[ml-0]" in banner and "[sandbox]" in banner
        commands = _curl_commands(banner)
        assert len(commands) == 3, banner
        results = [
            json.loads(subprocess.run(["bash", "-c", c], capture_output=True, check=True).stdout)
            for c in commands
        ]
        assert results[0]["sources"][0] == 2
        assert results[1]["status"] == "ok"
        assert results[1]["stdout"] == "hello from the sandbox\n"
        assert results[2]["status"] == "queued"
        url = f"http://{env['TRINE_GATEWAY_ADDR']}/v1/jobs/{results[2]['id']}"
        headers = {"Authorization": f"Bearer {key}"}
        assert wait_for(lambda: httpx.get(url, headers=headers).json()["status"] == "succeeded", 60)
        job_result = httpx.get(url, headers=headers).json()["result"]
        assert (job_result["status"], job_result["stdout"]) == ("ok", "hello from the sandbox\n")
        # launcher, gateway, sandbox, two ML replicas, one worker
        assert len(_processes_with(marker)) >= 6
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    reader.join(5)
    assert wait_for(lambda: _processes_with(marker) == [], 5), _processes_with(marker)
