"""``fhirlake writer`` beside a gateway with ``lake.writer_in_gateway=false``, as deploy/ runs them."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.canary import Canary
from tests.fixtures.server import free_port
from tests.fixtures.wait import wait_for

HEADERS = {"Content-Type": "application/fhir+json"}
FAST = {"FHIRLAKE_LAKE__COMMIT_INTERVAL_S": "0.3", "FHIRLAKE_LAKE__WRITER_IN_GATEWAY": "false"}


class Writer:
    def __init__(self, data_dir: Path, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fhirlake.cli",
                "writer",
                "--data-dir",
                str(data_dir),
                "--health-port",
                str(self.port),
            ],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        assert wait_for(self._alive, timeout=30), "the writer did not start"

    def _alive(self) -> bool:
        try:
            return httpx.get(self.url("/healthz"), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ready(self) -> dict[str, Any]:
        return dict(httpx.get(self.url("/readyz"), timeout=5).json())

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def _lock_is_free(data_dir: Path) -> bool:
    fd = os.open(data_dir / "lake" / "writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases the flock if taken
    return True


def _pending(server: Any) -> int:
    report = httpx.get(f"{server.origin}/readyz", timeout=5).json()
    return int(report["dependencies"]["lake_writer"]["pending_rows"])


@pytest.mark.slow
def test_separate_writer_commits_what_the_gateway_accepts_and_drains_on_sigterm(
    server_factory: Any, tmp_path: Path
) -> None:
    server = server_factory(**FAST)
    server.start()
    auth = {**HEADERS, **server.headers()}
    with httpx.Client(timeout=30, headers=auth) as http:
        assert http.post(server.base, content=Canary().bundle_bytes()).status_code == 200
        time.sleep(1.0)  # several commit intervals: a gateway that could commit would have
        assert _pending(server) > 0
        assert _lock_is_free(server.data_dir)  # the gateway never takes the committer's lock

        writer = Writer(server.data_dir, server.env, tmp_path / "writer.log")
        assert wait_for(lambda: _pending(server) == 0, timeout=30), "the writer did not commit the backlog"
        report = writer.ready()
        assert report["status"] == "ready" and report["breakers"] == {"catalog": "closed", "object_storage": "closed"}
        standby = Writer(server.data_dir, server.env, tmp_path / "standby.log")
        assert httpx.get(standby.url("/readyz"), timeout=5).status_code == 503  # one committer at a time
        assert standby.ready()["status"] == "standby"
        assert standby.terminate() == 0
        assert httpx.get(writer.url("/metrics"), timeout=5).status_code == 404  # no token file: not served

        for _ in range(3):
            assert http.post(server.base, content=Canary().bundle_bytes()).status_code == 200
        assert writer.terminate() == 0  # SIGTERM: commit everything accepted, then exit
        assert _pending(server) == 0
        assert _lock_is_free(server.data_dir)

        assert http.post(server.base, content=Canary().bundle_bytes()).status_code == 200
    server.stop()  # the gateway's shutdown does not drain into Iceberg either
    assert _lock_is_free(server.data_dir)
    info = subprocess.run(
        [sys.executable, "-m", "fhirlake.cli", "lake", "info", "--data-dir", str(server.data_dir)],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert info.returncode == 0, info.stderr
    log_text = (tmp_path / "writer.log").read_text()
    assert "writer_draining" in log_text and "writer_stopped" in log_text
    assert "Cnry" not in log_text  # canary PHI never reaches the writer's log
