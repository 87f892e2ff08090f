from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

from trine.redis_server import redis_server


@pytest.mark.skipif(os.environ.get("TRINE_TEST_REDIS") != "1", reason="needs redis-server")
def test_a_private_redis_answers_and_is_gone_afterwards() -> None:
    with redis_server() as url:
        port = urlparse(url).port
        assert port is not None
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"SET k v\r\nGET k\r\n")
            assert b"v" in conn.recv(64)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
