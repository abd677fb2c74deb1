"""One sweep across machines: scripts/sweep.py workers, each started on its own, sharing a study on a real
PostgreSQL server that the test starts (Debian's package: initdb and pg_ctl) on a free port and stops after.
Skipped with one line where PostgreSQL or psycopg is not installed."""

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, free_port

optuna = pytest.importorskip("optuna", reason="the sweep extra is not installed: pip install -e .[sweep]")
pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e .[sweep]")

POSTGRES_BIN = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15")] + [Path("/usr/local/bin")]
BIN = next((d for d in POSTGRES_BIN if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)
pytestmark = pytest.mark.skipif(BIN is None, reason="PostgreSQL is not installed (apt install postgresql)")


def as_server_user() -> dict:
    """PostgreSQL refuses to run as root: as root, its programs run as the postgres user."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")
    return {"user": user.pw_uid, "group": user.pw_gid}


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own: a fresh cluster in a temporary folder, on a free loopback port; its URL."""
    home = Path(tempfile.mkdtemp(prefix="catdog-pg-"))
    user = as_server_user()
    if user:
        os.chown(home, user["user"], user["group"])
    port = free_port()
    run = lambda *args: subprocess.run([str(BIN / args[0]), *args[1:]], check=True, capture_output=True, **user)  # noqa: E731
    run("initdb", "-D", str(home / "data"), "-U", "sweeper", "--auth", "trust", "-E", "UTF8")
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1"
    run("pg_ctl", "-D", str(home / "data"), "-o", options, "-l", str(home / "log"), "-w", "start")
    try:
        psql = BIN / "psql" if (BIN / "psql").exists() else shutil.which("psql")
        subprocess.run([str(psql), "-h", "127.0.0.1", "-p", str(port), "-U", "sweeper", "-d", "postgres", "-c",
                        "CREATE DATABASE sweeps"], check=True, capture_output=True)  # fmt: skip
        yield f"postgresql://sweeper@127.0.0.1:{port}/sweeps"
    finally:
        run("pg_ctl", "-D", str(home / "data"), "-m", "immediate", "stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def sweep_files(tiny_config, tmp_path):
    search = tmp_path / "tiny.yaml"
    space = {"model.lr": {"low": 3.0e-4, "high": 3.0e-3, "log": True}}
    search.write_text(yaml.safe_dump({"objective": "val/acc", "parameters": space}))
    data = tiny_config["data"]
    flags = ["--data.data_dir", data["data_dir"], "--data.image_size", "16", "--data.cache_dir", data["cache_dir"],
             "--model.net.init_args.hidden_dims", "[16, 8]", "--trainer.accelerator", "cpu",
             "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "2"]  # fmt: skip
    return search, flags


def worker(search, logs: Path, storage: str, flags, *more, name="shared", **popen) -> subprocess.Popen:
    """One machine's command: its own logs folder (its own disk), the study on the shared server."""
    args = [sys.executable, str(ROOT / "scripts" / "sweep.py"), "--search", str(search), "--logs_dir", str(logs),
            "--storage", storage, "--study_name", name, *more, *flags]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_three_workers_started_apart_share_one_study_on_postgresql(postgres, sweep_files, tmp_path):
    search, flags = sweep_files
    workers = [worker(search, tmp_path / f"machine{i}", postgres, flags, "--n_trials", "6") for i in range(3)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    trials = optuna.load_study(study_name="shared", storage=postgres).trials
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 6 <= len(finished) == len(trials) <= 8, [t.state.name for t in trials]  # none lost, none left running
    runs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(runs)) == len(runs), "no trial run twice"
    assert {Path(r).parent.name for r in runs} <= {"machine0", "machine1", "machine2"}


def test_a_killed_workers_trial_is_retried_once_by_the_heartbeat(postgres, sweep_files, tmp_path):
    search, flags = sweep_files
    logs = tmp_path / "machine"
    slow = [*flags, "--trainer.max_epochs", "400"]
    first = worker(search, logs, postgres, slow, "--n_trials", "1", "--heartbeat_s", "1", name="killed",
                   start_new_session=True)  # fmt: skip
    last = logs / "killed-trial0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while not last.exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    study = lambda: optuna.load_study(study_name="killed", storage=postgres)  # noqa: E731
    assert [t.state.name for t in study().trials] == ["RUNNING"]
    time.sleep(2.5)  # two heartbeats: stale
    again = worker(search, logs, postgres, [*flags, "--trainer.max_epochs", "3"], "--n_trials", "1",
                   "--heartbeat_s", "1", name="killed")  # fmt: skip
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    trials = study().trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]  # counted once: the retry, not the killed one
    assert trials[1].params == trials[0].params and trials[1].user_attrs["run_dir"] == str(logs / "killed-trial0")
