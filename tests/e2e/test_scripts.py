"""``scripts/_venv.sh``, which ``./scripts/serve`` and ``./scripts/test`` source: pip runs
when pyproject.toml changed, not at every start. Run in a scratch folder whose
``.venv/bin/python`` records pip's calls instead of installing anything."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e.processes import REPOSITORY

RECORDING_PYTHON = """#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
    echo "$*" >> "$(dirname "$0")/../pip-calls"
    exit 0
fi
exec {python} "$@"
"""


def install(folder: Path, what: str) -> list[str]:
    """``install_tandem WHAT`` in ``folder``; pip's calls so far."""
    subprocess.run(
        ["bash", "-c", f'set -euo pipefail; source scripts/_venv.sh; install_tandem "{what}"'],
        cwd=folder,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        check=True,
        timeout=30,
    )
    calls = folder / ".venv" / "pip-calls"
    return calls.read_text().splitlines() if calls.exists() else []


def test_pip_runs_only_when_pyproject_changes(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPOSITORY / "scripts" / "_venv.sh", tmp_path / "scripts")
    shutil.copy(REPOSITORY / "pyproject.toml", tmp_path)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(RECORDING_PYTHON.format(python=sys.executable))
    python.chmod(0o755)

    assert len(install(tmp_path, ".[dev]")) == 1
    assert len(install(tmp_path, ".[dev]")) == 1  # nothing changed: no pip
    assert len(install(tmp_path, ".")) == 1  # the server alone is in the dev install
    with (tmp_path / "pyproject.toml").open("a") as pyproject:
        pyproject.write("\n# a new dependency, say\n")
    assert len(install(tmp_path, ".")) == 2
    assert len(install(tmp_path, ".[dev]")) == 3  # the dev tools for the new pyproject
    assert len(install(tmp_path, ".")) == 3
    assert install(tmp_path, ".")[-1].endswith("-e .[dev]")
