"""The Postman collection (``postman/``) run by newman, Postman's command-line runner,
against a live ``python -m app``, as a Postman user would run it. scripts/test installs
newman; this test installs it too when run on its own, and is skipped only without npm."""

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.processes import REPOSITORY, ServerProcess, server_environment

KEY = "postman-key"
POSTMAN = REPOSITORY / "postman"
NEWMAN = POSTMAN / "node_modules" / ".bin" / "newman"
RUN_TIMEOUT = 300.0


def installed_newman() -> Path:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: the Postman collection cannot be run with newman")
    # The same install as scripts/test's (a no-op once done).
    installing = subprocess.run(
        ["bash", "-c", "source scripts/_newman.sh && install_newman"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert installing.returncode == 0, installing.stdout + installing.stderr
    assert NEWMAN.exists(), installing.stdout + installing.stderr
    return NEWMAN


def test_newman_passes_the_collection(tmp_path: Path) -> None:
    newman = installed_newman()
    # The echo LLM is slowed so that a turn executes long enough for the collection's
    # 409 turn_in_progress (slowLlm=true asserts it rather than skipping it).
    env = server_environment({"TANDEM_API_KEYS": f"{KEY}:dev", "TANDEM_ECHO_DELAY_MS": "20"})
    server = ServerProcess.start("postman-server", env, tmp_path)
    try:
        server.wait_until_ready()
        run = subprocess.run(
            [
                str(newman),
                "run",
                str(POSTMAN / "tandem.postman_collection.json"),
                "--environment",
                str(POSTMAN / "tandem.postman_environment.json"),
                "--env-var",
                f"baseUrl={server.url}",
                "--env-var",
                f"apiKey={KEY}",
                "--env-var",
                "slowLlm=true",
                "--timeout-request",
                "30000",
                "--reporters",
                "cli",
                "--reporter-cli-no-banner",
                "--color",
                "off",
            ],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    finally:
        server.stop()
    report = run.stdout + run.stderr
    assert run.returncode == 0, f"{report}\n--- server log ---\n{server.log()[-4000:]}"
    assert "✓  answers 409 turn_in_progress" in report  # asserted, not skipped
