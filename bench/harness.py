"""What the benchmarks share: the server under test as a subprocess, percentiles, machine facts."""

from __future__ import annotations

import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from workload import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``fhirlake serve`` as a subprocess on its own data directory; stderr goes to ``log``."""

    def __init__(self, data_dir: Path, log: Path, env: dict[str, str]) -> None:
        self.data_dir, self.log, self.env = data_dir, log, env
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"  # the product: TLS, mTLS for writes, bearer tokens
        self.env = env | {"FHIRLAKE_AUTH__ISSUER": self.url}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        cmd = [sys.executable, "-m", "fhirlake.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*cmd, "--data-dir", str(self.data_dir)], stdout=log, stderr=log, env=self.env, cwd=REPO
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
            if self._healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"server not healthy after {timeout:.0f}s; see {self.log}")

    def _healthy(self) -> bool:
        try:
            # Only liveness on loopback, before the benchmark's own trust is set up.
            return httpx.get(f"{self.url}/healthz", timeout=1.0, verify=False).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 900.0) -> tuple[float, int | None]:
        """SIGTERM, wait for the drain; returns (seconds, exit code or None if it had to be killed)."""
        assert self.proc is not None
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        return time.perf_counter() - started, code


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
    }
