"""Run directories: claimed atomically, locked while training, never left half-made, never outside --logs_dir."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import train_script

from catdog_lightning.cli import main
from catdog_lightning.errors import ConfigError
from catdog_lightning.storage.runs import RunDirectory, claim, next_run_name
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge

HOLD_LOCK = """
import sys, time
from pathlib import Path
from catdog_lightning.storage.runs import RunDirectory, claim
run, lock, _ = claim(RunDirectory(Path(sys.argv[1]), sys.argv[2]), new=True, auto_name=False)
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def held_run(tmp_path):
    """Another process holding the lock of logs/held, as a training run would."""
    logs = tmp_path / "logs"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(logs), "held"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield logs, holder.pid
    holder.kill()
    holder.wait()


def test_a_second_process_on_a_locked_run_is_refused_naming_the_holder(held_run):
    logs, pid = held_run
    with pytest.raises(ConfigError, match=f"in use by process {pid}"):
        claim(RunDirectory(logs, "held"), new=True, auto_name=False)
    with pytest.raises(ConfigError, match=f"in use by process {pid}"):
        claim(RunDirectory(logs, "held"), new=False, auto_name=False)  # a resume of a live run


def test_the_lock_of_a_killed_process_is_taken_over(held_run):
    logs, pid = held_run
    subprocess.run(["kill", "-9", str(pid)], check=True)
    time.sleep(0.2)
    run, lock, _ = claim(RunDirectory(logs, "held"), new=True, auto_name=False)
    assert (run.path / ".lock").read_text() == str(__import__("os").getpid())
    lock.release()


def test_runs_started_together_get_their_own_folders(tmp_path):
    """Both computed version_0 before either made it: the second claim moves on to version_1."""
    logs = tmp_path / "logs"
    first = RunDirectory(logs, next_run_name(logs))
    second = RunDirectory(logs, next_run_name(logs))
    assert first.name == second.name == "version_0"
    a, lock_a, created_a = claim(first, new=True, auto_name=True)
    b, lock_b, created_b = claim(second, new=True, auto_name=True)
    assert (a.name, b.name) == ("version_0", "version_1") and created_a and created_b
    lock_a.release()
    lock_b.release()


@pytest.mark.parametrize("name", ["../../x", "..", ".", "a/b", "/tmp/elsewhere"])
def test_run_name_must_be_one_plain_folder_name(tiny_config, name, capsys):
    with pytest.raises(ConfigError, match="one plain folder name"):
        train(merge(tiny_config, {"run_name": name}))
    assert not Path(tiny_config["logs_dir"]).exists()


@pytest.mark.parametrize("damage", ["empty", "cut", "list", "python_tag", "malformed"])
def test_a_torn_config_yaml_is_refused_on_resume_never_replaced_by_defaults(tiny_config, damage):
    metrics = train(merge(tiny_config, {"trainer": {"max_epochs": 1}}))
    config_file = Path(metrics["run_dir"]) / "config.yaml"
    text = config_file.read_text()
    config_file.write_text(
        {
            "empty": "",
            "cut": text[: len(text) // 3],
            "list": "- 1\n- 2\n",
            "python_tag": "!!python/object/apply:os.system ['true']\n",
            "malformed": "data: [unclosed\n",
        }[damage]
    )
    before = config_file.read_text()
    with pytest.raises(ConfigError, match="config.yaml"):
        train({"ckpt_path": "last", "logs_dir": tiny_config["logs_dir"], "trainer": {"max_epochs": 2}})
    assert config_file.read_text() == before, "left as it was"


def test_a_start_that_fails_leaves_no_folder(tiny_config, capsys):
    # Lightning refuses the value only when the Trainer is built, after the data and the run folder.
    argv = train_script(tiny_config, "--trainer.strategy", "no-such-strategy")
    assert main(argv[2:]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error:")
    assert not Path(tiny_config["logs_dir"]).exists() or not list(Path(tiny_config["logs_dir"]).iterdir())


def test_fast_dev_run_runs_a_batch_of_each_and_saves_nothing(tiny_config, capsys):
    metrics = train(merge(tiny_config, {"trainer": {"fast_dev_run": True}}))
    assert "test/acc" in metrics and "best_checkpoint" not in metrics
    assert "fast_dev_run" in capsys.readouterr().out
    logs = Path(tiny_config["logs_dir"])
    assert not logs.exists() or not list(logs.iterdir()), "no run directory, checkpoints or metrics.json"


@pytest.mark.parametrize("planted", ["symlink", "hard link", "fifo"])
def test_a_planted_lock_is_refused_and_what_it_points_at_untouched(tmp_path, planted):
    import os

    run = RunDirectory(tmp_path / "logs", "r")
    run.path.mkdir(parents=True)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    lock = run.path / ".lock"
    {"symlink": lambda: lock.symlink_to(target), "hard link": lambda: os.link(target, lock),
     "fifo": lambda: os.mkfifo(lock)}[planted]()  # fmt: skip
    with pytest.raises(ConfigError, match=r"\.lock"):
        claim(run, new=False, auto_name=False)
    assert target.read_text() == "keep me"
