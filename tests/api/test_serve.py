"""`baton serve` on its own: without REDIS_URL it runs a private Redis with AOF under the data folder,
and Ctrl-C or SIGTERM (what process managers send) stops both."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import pytest

from tests.conftest import TINY_KB, ServiceProcess


def private_redis_address(log: str) -> str:
    """host:port of the private Redis, as `baton serve` prints it."""
    line = next(line for line in log.splitlines() if "started a private Redis on" in line)
    return line.split("redis://", 1)[1].split("/", 1)[0]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_private_redis_is_started_kept_on_disk_and_stopped_with_the_service(tmp_path, baton_service, stop):
    # The trained model of the session's service, so this one starts without training again.
    service = ServiceProcess(TINY_KB, tmp_path, redis_url=None, model_dir=baton_service.model_dir)
    service.start()
    try:
        answer = httpx.post(f"{service.url}/api/v1/web/session", json={})
        assert answer.status_code == 200
        address = private_redis_address(service.log_tail(200))
        assert httpx.get(f"{service.url}/healthz").json()["status"] == "ok"
    finally:
        service.stop(stop)
    data = tmp_path / "var" / "redis"
    assert any(p.name.startswith("appendonly") for p in data.iterdir())  # AOF persistence is on
    host, port = address.split(":")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the private Redis goes with the service
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                time.sleep(0.2)
        except OSError:
            break
    else:
        raise AssertionError(f"the private Redis at {address} is still running after {stop.name}")
