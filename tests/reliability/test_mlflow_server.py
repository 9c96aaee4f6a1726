"""A team MLflow server: `mlflow server` on PostgreSQL, artifacts served by the server, on 127.0.0.1.

Training (two processes registering versions at once), promotion and scoring all go through
``MLFLOW_TRACKING_URI``, exactly as docs/reliability.md tells a team to run it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from scoring_jobs import AS_OF, Project, cli_env, committed_run, pes_ml, score_args, start_pes_ml

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(backend_uri: str, artifacts: Path, port: int) -> list[str]:
    """The command documented in docs/reliability.md (loopback only; artifacts proxied by the server)."""
    return [
        MLFLOW, "server",
        "--backend-store-uri", backend_uri,
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def mlflow_server(postgres_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:  # type: ignore[no-untyped-def]
    pytest.importorskip("psycopg", reason="psycopg[binary] is in the dev extra: pip install -e '.[dev]'")
    tmp = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # else it starts a large job-runner
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    log = open(tmp / "server.log", "wb")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(
        server_command(postgres_server.url(postgres_server.create_database()), tmp / "artifacts", port),
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"mlflow server did not start:\n{(tmp / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(1)
        yield uri, tmp / "artifacts"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_train_promote_and_score_through_a_postgres_backed_mlflow_server(
    trained_project: Project, mlflow_server: tuple[str, Path], tmp_path: Path
) -> None:
    uri, artifacts = mlflow_server
    config = trained_project.config_for(tmp_path, small=False)
    env = cli_env(MLFLOW_TRACKING_URI=uri)

    # Two team members train at once (each with their own work folder) against the one server:
    # two versions with distinct numbers.
    members = [tmp_path / name for name in ("alice", "bob")]
    for member in members:
        member.mkdir()
    configs = [trained_project.config_for(member, small=False) for member in members]
    jobs = [
        start_pes_ml("train", "--config", str(configs[i - 1]), "--run-name", f"team-{i}",
                     stderr=tmp_path / f"train-{i}.err", stdout=tmp_path / f"train-{i}.out", env=env)
        for i in (1, 2)
    ]  # fmt: skip
    for i, job in enumerate(jobs, start=1):
        assert job.wait(timeout=1200) == 0, (tmp_path / f"train-{i}.err").read_text()[-3000:]
    registered = sorted(
        (tmp_path / f"train-{i}.out").read_text().split(" v", 1)[1].split(" ", 1)[0] for i in (1, 2)
    )
    assert registered == ["1", "2"]

    listed = pes_ml("models", "--config", str(config), env=env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "challenger" in listed.stdout

    promoted = pes_ml("promote", "--config", str(config), "--model-version", "2", "--force", env=env)
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    assert "v2 is now @champion" in promoted.stdout

    scored = pes_ml(*score_args(config), env=env)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "with model version 2" in scored.stdout
    committed_run(tmp_path / "runs", AS_OF)
    # The models went to the server's artifact store, not to the config's local folder.
    assert len(list(artifacts.rglob("pes_model.json"))) >= 2
