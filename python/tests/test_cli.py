from __future__ import annotations

import json
from pathlib import Path

import pytest

from trine import cli


def test_examples_are_valid_requests() -> None:
    rag = json.loads(json.dumps(cli.EXAMPLE_RAG))
    assert rag["query"] and len(rag["documents"]) == 3
    sandbox = json.loads(json.dumps(cli.EXAMPLE_SANDBOX))
    assert sandbox["language"] == "wat"
    # The banner wraps the JSON in single quotes for the shell.
    assert "'" not in json.dumps(cli.EXAMPLE_RAG) + json.dumps(cli.EXAMPLE_SANDBOX)


def test_up_rejects_zero_replicas(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["up", "--ml-replicas", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_up_without_a_build_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["up", "--root", str(tmp_path)]) == 1
    assert "make build" in capsys.readouterr().err
