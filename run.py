#!/usr/bin/env python3
"""Set everything up and run fhirlake, with nothing but Python 3.11.

    python3 run.py serve     # venv + install + start the service with demo data
    python3 run.py test      # venv + install + the whole test suite

Creates ``.venv`` next to this file on first use and reinstalls only when
``pyproject.toml`` changes. Extra arguments go to ``fhirlake serve`` / pytest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".fhirlake-installed"


def ensure_env() -> None:
    if sys.version_info[:2] != (3, 11):
        sys.exit("fhirlake needs Python 3.11")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.check_call([*pip, "--upgrade", "pip"])
    subprocess.check_call([*pip, "-e", f"{ROOT}[dev]"])
    STAMP.write_text(wanted)


def ensure_chromium() -> None:
    """The audit page is tested in headless Chromium: install Debian's package when we may (root + apt)."""
    if shutil.which("chromium") or not shutil.which("apt-get") or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.call(["apt-get", "update", "-qq"], env=env, **quiet) == 0:
        subprocess.call(["apt-get", "install", "-y", "-qq", "chromium"], env=env, **quiet)


def main() -> int:
    command, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("serve", [])
    ensure_env()
    if command == "serve":
        args = rest or ["--demo"]
        return subprocess.call([str(BIN / "fhirlake"), "serve", *args], cwd=ROOT)
    if command == "test":
        ensure_chromium()
        return subprocess.call([str(BIN / "python"), "-m", "pytest", *rest], cwd=ROOT)
    if command == "lint":
        python = str(BIN / "python")
        checks = [
            [python, "-m", "ruff", "check", "."],
            [python, "-m", "ruff", "format", "--check", "."],
            [python, "-m", "mypy"],
        ]
        return max(subprocess.call(c, cwd=ROOT) for c in checks)
    sys.exit(f"unknown command {command!r}; use serve, test or lint")


if __name__ == "__main__":
    raise SystemExit(main())
