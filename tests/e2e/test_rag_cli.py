"""`trine ingest` and `trine eval` against a real stack, through the public API."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from conftest import ROOT
from trine.credentials import ApiKey
from trine.stack import Stack

TRINE = ROOT / ".venv" / "bin" / "trine"
TOPICS = {
    "cron": "The cron daemon runs scheduled commands at fixed times from crontab files.",
    "ssh": "The secure shell server accepts encrypted remote logins with public keys.",
    "fstab": "The filesystem table lists disks and partitions mounted at boot time.",
    "dns": "The resolver configuration names the nameservers used to look up host names.",
}
QUERIES = {
    "cron": "run commands on a schedule",
    "ssh": "encrypted remote login server",
    "fstab": "which partitions are mounted at boot",
    "dns": "nameservers for host name lookup",
}


def trine(stack: Stack, key: ApiKey, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRINE), *args, "--gateway", stack.gateway_url, "--key", key.key],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_ingest_files(stack: Stack, dev_key: ApiKey, client: httpx.Client, tmp_path: Path) -> None:
    (tmp_path / "cron.md").write_text(f"# Cron\n\n{TOPICS['cron']}\n")
    (tmp_path / "ssh.html").write_text(f"<html><script>x()</script><p>{TOPICS['ssh']}</p></html>")
    (tmp_path / "fstab.txt").write_text(TOPICS["fstab"])
    files = sorted(str(p) for p in tmp_path.iterdir())
    result = trine(stack, dev_key, "ingest", "--collection", "cli-files", *files)
    assert result.returncode == 0, result.stderr
    assert "cli-files: 3 files, 3 chunks" in result.stdout
    assert client.get("/v1/collections/cli-files").json()["documents"] == 3
    answer = client.post(
        "/v1/rag/query", json={"collection": "cli-files", "query": "remote encrypted login"}
    ).json()
    assert answer["sources"][0].endswith("ssh.html")
    assert "x()" not in answer["passages"][0]["text"]

    bad = trine(stack, dev_key, "ingest", "--collection", "cli-files", str(tmp_path / "a.png"))
    assert bad.returncode == 1
    assert "unsupported" in bad.stderr


def test_eval_scores_every_mode(stack: Stack, dev_key: ApiKey, tmp_path: Path) -> None:
    with (tmp_path / "corpus.jsonl").open("w") as corpus:
        for doc_id, text in TOPICS.items():
            corpus.write(json.dumps({"id": doc_id, "title": doc_id, "text": text}) + "\n")
    with (tmp_path / "queries.jsonl").open("w") as queries:
        for doc_id, text in QUERIES.items():
            queries.write(json.dumps({"id": f"q-{doc_id}", "text": text}) + "\n")
    (tmp_path / "qrels.tsv").write_text("".join(f"q-{d}\t{d}\t1\n" for d in TOPICS))
    result = trine(stack, dev_key, "eval", "--data", str(tmp_path), "--collection", "cli-eval")
    assert result.returncode == 0, result.stderr
    assert "ingested 4/4 documents" in result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {"dense", "keyword", "hybrid"}
    for mode in ("dense", "hybrid"):
        mrr, recall, ndcg, queries = rows[mode]
        assert float(recall) == 1.0
        assert float(mrr) >= 0.75
        assert 0 < float(ndcg) <= 1
        assert queries == "4"
