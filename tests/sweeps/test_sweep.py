"""scripts/sweep.py on a real Optuna study in a SQLite file: trials are ordinary runs, workers share a study,
a killed worker's trial is retried, and what was found trains as a recipe. lr_find writes its plot."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from catdog_lightning.cli import main, sweep_main

optuna = pytest.importorskip("optuna", reason="the sweep extra is not installed: pip install -e .[sweep]")
pytest.importorskip("optuna_integration")

SEARCH = {"objective": "val/acc", "parameters": {"model.lr": {"low": 3.0e-4, "high": 3.0e-3, "log": True},
                                                 "model.net.init_args.hidden_dims": [[16, 8], [8, 4]]}}  # fmt: skip


@pytest.fixture
def sweep_files(tiny_config, tmp_path):
    """A search file and the train.py flags a sweep on the tiny data gives every trial."""
    search = tmp_path / "tiny.yaml"
    search.write_text(yaml.safe_dump(SEARCH))
    data = tiny_config["data"]
    flags = ["--data.data_dir", data["data_dir"], "--data.image_size", "16", "--data.cache_dir", data["cache_dir"],
             "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "2",
             "--seed_everything", "3"]  # fmt: skip
    return search, flags, tmp_path / "logs"


def sweep_args(search, logs, *more: str) -> list[str]:
    return ["--search", str(search), "--logs_dir", str(logs), *more]


def study(logs: Path, name: str = "tiny"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{logs / 'optuna.db'}")


def test_a_tiny_sweep_end_to_end_and_its_recipe_trains(sweep_files, capsys):
    search, flags, logs = sweep_files
    assert sweep_main([*sweep_args(search, logs, "--n_trials", "3"), *flags]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    recipe = Path(out[-1])
    assert recipe == logs / "tiny-sweep" / "best.yaml" and recipe.is_file()
    assert any(line.startswith("time: ") and "pruning saved" in line for line in out)
    trials = study(logs).trials
    assert len(trials) == 3 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    for trial in trials:  # each an ordinary run: its folder, settings, checkpoints
        run = Path(trial.user_attrs["run_dir"])
        assert run.name == f"tiny-trial{trial.number}" and (run / "config.yaml").is_file()
        assert yaml.safe_load((run / "config.yaml").read_text())["model"]["lr"] == trial.params["model.lr"]
    found = yaml.safe_load(recipe.read_text())
    best = study(logs).best_trial
    assert found["model"]["lr"] == best.params["model.lr"] and "data_dir" not in found.get("data", {})
    assert (logs / "tiny-sweep" / "history.png").is_file()
    assert list((logs / "tiny-sweep").glob("events.out.tfevents.*")), "the pictures in TensorBoard"
    data = flags[1]
    assert main(["--config", str(recipe), "--data.data_dir", data, "--logs_dir", str(logs), "--run_name", "again",
                 "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]) == 0  # fmt: skip
    metrics = json.loads((logs / "again" / "metrics.json").read_text())
    assert 0 <= metrics["test/acc"] <= 1


def run_sweep_process(search, logs, flags, *more, **popen) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "scripts" / "sweep.py"), *sweep_args(search, logs, *more), *flags]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_two_workers_share_one_study(sweep_files):
    search, flags, logs = sweep_files
    workers = [run_sweep_process(search, logs, flags, "--n_trials", "4") for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    trials = study(logs).trials
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 4 <= len(finished) <= 5 and len(finished) == len(trials), "none lost, none left running"
    runs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(runs)) == len(runs), "no trial run twice"


def test_a_worker_logs_the_pictures_it_drew_whatever_another_does_to_the_files(tmp_path):
    """Workers sharing a study redraw the same PNG files: each lands whole, and what goes to TensorBoard is what
    this worker drew, not a file another worker is half-way through writing (a CI run once failed so)."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from catdog_lightning.sweeps.report import pictures, to_tensorboard

    shared = optuna.create_study(direction="maximize")
    shared.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-2, log=True) * 10, n_trials=3)
    drawn = pictures(shared, tmp_path)
    assert {p.name for p in drawn} == {"history.png", "importances.png", "slice.png"}
    for path, png in drawn.items():
        assert path.read_bytes() == png and Image.open(path).size[0] > 100
    assert not list(tmp_path.glob(".*")), "no temporaries left"
    history = tmp_path / "history.png"
    history.write_bytes(history.read_bytes()[:100])  # another worker's write, torn
    to_tensorboard(drawn, tmp_path)
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"sweep/history", "sweep/importances", "sweep/slice"}
    assert acc.Images("sweep/history")[0].width == Image.open(io.BytesIO(drawn[history])).width


def test_a_killed_worker_s_trial_is_retried_and_resumes_its_run(sweep_files):
    search, flags, logs = sweep_files
    slow = [*flags, "--trainer.max_epochs", "400"]
    worker = run_sweep_process(search, logs, slow, "--n_trials", "1", "--heartbeat_s", "1", start_new_session=True)
    last = logs / "tiny-trial0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while not last.exists():
        assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()
        time.sleep(0.2)
    time.sleep(1.5)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert [t.state.name for t in study(logs).trials] == ["RUNNING"]
    time.sleep(2.5)  # two heartbeats: stale
    again = run_sweep_process(search, logs, [*flags, "--trainer.max_epochs", "3"], "--n_trials", "1",
                              "--heartbeat_s", "1")  # fmt: skip
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    states = [t.state.name for t in study(logs).trials]
    assert states == ["FAIL", "COMPLETE"]
    retried = study(logs).trials[1]
    assert retried.params == study(logs).trials[0].params
    assert retried.user_attrs["run_dir"] == str(logs / "tiny-trial0"), "the killed run, resumed"


@pytest.mark.parametrize(
    "search, more, says",
    [
        ({"parameters": {"model.learning_rate": [0.1]}}, [], "model.learning_rate = 0.1: not a train.py setting"),
        ({"parameters": {"model.lr": {"low": 0.1, "high": 0.01}}}, [], "an empty range"),
        ({"parameters": {"model.lr": []}}, [], "an empty list of choices"),
        ({"parameters": {"data.batch_size": {"low": -100, "high": 64}}}, [], "--data.batch_size must be between 1"),
        ({"parameters": {"trainer.max_epochs": {"low": 0, "high": 5}}}, [], "--trainer.max_epochs must be at least 1"),
        ({"parameters": {"model.net.init_args.dropout": [0.1, 1.5]}}, [], "dropout must be in [0, 1), got 1.5"),
        ({"objective": "test/acc", "parameters": {"model.lr": [0.1]}}, [], "objective must be one of"),
        (SEARCH, ["--storage", "postgresql://127.0.0.1:1/nothing"], "--storage postgresql://127.0.0.1:1/nothing"),
        (SEARCH, ["--run_name", "x"], "--run_name: sweep.py sets it"),
    ],
)
def test_bad_input_is_one_line_exit_2(sweep_files, capsys, search, more, says):
    path, flags, logs = sweep_files
    path.write_text(yaml.safe_dump(search))
    assert sweep_main([*sweep_args(path, logs, "--n_trials", "1"), *flags, *more]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err


def test_a_study_name_with_another_search_space_is_refused_and_left_whole(sweep_files, capsys):
    search, flags, logs = sweep_files
    assert sweep_main([*sweep_args(search, logs, "--n_trials", "1"), *flags]) == 0
    before = [(t.number, t.state.name, t.params) for t in study(logs).trials]
    other = search.with_name("other.yaml")
    other.write_text(yaml.safe_dump({"parameters": {"model.net.init_args.dropout": {"low": 0.0, "high": 0.5}}}))
    capsys.readouterr()
    assert sweep_main([*sweep_args(other, logs, "--n_trials", "2", "--study_name", "tiny"), *flags]) == 2
    assert "searched another space" in capsys.readouterr().err
    assert [(t.number, t.state.name, t.params) for t in study(logs).trials] == before


def test_lr_find_prints_a_rate_and_writes_its_plot(tiny_config, capsys):
    data = tiny_config["data"]
    argv = ["lr_find", "--data.data_dir", data["data_dir"], "--data.image_size", "16", "--data.cache_dir",
            data["cache_dir"], "--model.net.init_args.hidden_dims", "[16, 8]", "--trainer.accelerator", "cpu",
            "--logs_dir", tiny_config["logs_dir"]]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "suggested learning rate:" in out
    run = Path(tiny_config["logs_dir"]) / "lr_find_0"
    found = json.loads((run / "lr_find.json").read_text())
    assert len(found["lr"]) == len(found["loss"]) > 10 and (run / "lr_find.png").stat().st_size > 1000


def test_the_pruning_saving_scales_a_pruned_trial_to_its_last_epoch():
    from datetime import datetime, timedelta

    from catdog_lightning.sweeps.report import pruning_saving

    states = optuna.trial.TrialState
    epochs = optuna.distributions.IntDistribution(10, 40, step=10)
    start = datetime(2026, 1, 1)
    sweep = optuna.create_study()
    for number, (state, minutes, params, steps) in enumerate([
        (states.COMPLETE, 4, {}, range(20)),  # the sweep's own 20 epochs, run to the end
        (states.PRUNED, 1, {"trainer.max_epochs": 40}, range(10)),  # stopped after 10 of 40 epochs
        (states.FAIL, 2, {}, range(5)),  # a killed worker's: counted apart (its retry resumes its run)
    ]):  # fmt: skip
        sweep.add_trial(optuna.trial.FrozenTrial(
            number, state, 0.5 if state == states.COMPLETE else None, start, start + timedelta(minutes=minutes),
            params, {k: epochs for k in params}, {}, {}, {step: 0.5 for step in steps}, None))  # fmt: skip
    assert pruning_saving(sweep, max_epochs=20) == (5 * 60, (4 + 4) * 60, 2 * 60)


def test_a_trial_testing_its_last_checkpoint_is_scored_by_its_last_epoch(tiny_config):
    import lightning as L

    from catdog_lightning.sweeps.study import scored
    from catdog_lightning.training import train

    class Logged(L.Callback):  # val/loss as each epoch logged it
        seen: list = []

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.seen.append(float(trainer.callback_metrics["val/loss"]))

    config = {**tiny_config, "test_checkpoint": "last", "best_by": "val/loss"}
    config["trainer"] = {**config["trainer"], "max_epochs": 3}
    config["model"] = {**config["model"], "lr": 1.0}  # a rate at which the last epoch is not the best
    metrics = train(config, callbacks=[Logged()])
    assert Path(metrics["tested_checkpoint"]).name == "last.ckpt" and len(Logged.seen) == 3
    assert metrics["best_epoch"] < metrics["tested_epoch"] and metrics["val/loss"] == pytest.approx(min(Logged.seen))
    default_cache = Path(os.environ["XDG_CACHE_HOME"]) / "catdog_lightning"
    assert scored(metrics, "val/loss", config) == pytest.approx(Logged.seen[-1], abs=1e-6)
    assert not default_cache.exists()  # scored from the run's own --data.cache_dir, not decoded anew elsewhere
    assert scored({**metrics, "tested_checkpoint": metrics["best_checkpoint"]}, "val/loss", {}) == metrics["val/loss"]


def test_the_shipped_search_spaces_read_and_check_against_train_py_s_flags():
    from catdog_lightning.cli import parse_flags
    from catdog_lightning.sweeps.search import read_search_space

    for path in sorted((ROOT / "configs" / "search").glob("*.yaml")):
        objective, space, pruning = read_search_space(path, parse_flags)
        assert objective == "val/acc" and space and set(pruning) <= {"warmup_epochs", "startup_trials"}


def test_a_sweep_on_optunas_journal_file_as_docs_sweeps_md_offers(sweep_files, tmp_path, capsys):
    search, flags, logs = sweep_files
    journal = tmp_path / "shared" / "sweep.log"
    assert sweep_main([*sweep_args(search, logs, "--n_trials", "2", "--storage", f"journal:///{journal}"), *flags]) == 0
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    trials = optuna.load_study(study_name="tiny", storage=JournalStorage(JournalFileBackend(str(journal)))).trials
    assert len(trials) == 2 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert "journal:///" in (ROOT / "docs" / "sweeps.md").read_text()


def test_a_foreign_sqlite_file_is_refused_untouched(sweep_files, tmp_path, capsys):
    import sqlite3

    search, flags, logs = sweep_files
    foreign = tmp_path / "accounts.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    before = foreign.read_bytes()
    assert sweep_main([*sweep_args(search, logs, "--storage", f"sqlite:///{foreign}"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a database of something else (tables customers)" in err
    assert foreign.read_bytes() == before
    (tmp_path / "text.db").write_text("not a database at all, just some text that is long enough")
    assert sweep_main([*sweep_args(search, logs, "--storage", f"sqlite:///{tmp_path / 'text.db'}"), *flags]) == 2
    assert "not a SQLite database" in capsys.readouterr().err


def test_a_sweep_whose_every_trial_is_refused_ends_in_lines_not_tracebacks(sweep_files, tmp_path, capsys):
    _, flags, logs = sweep_files
    search = tmp_path / "refused.yaml"
    # A value each setting takes, refused only by the run that joins them (no validation photos to pick a best).
    search.write_text(yaml.safe_dump({"parameters": {"data.val_fraction": [0.0]}}))
    assert sweep_main([*sweep_args(search, logs, "--n_trials", "2"), *flags]) == 2
    captured = capsys.readouterr()
    refused = [line for line in captured.out.splitlines() if line.startswith("trial ") and "refused" in line]
    assert len(refused) == 2 and all("--data.val_fraction 0 leaves no validation" in line for line in refused)
    assert "Traceback" not in captured.out + captured.err
    assert "no completed trial" in captured.err and captured.err.count("\n") == 1


def test_text_choices_arrive_as_text_and_ranges_follow_optunas_rules(sweep_files, tmp_path, capsys):
    _, flags, logs = sweep_files
    search = tmp_path / "typed.yaml"
    search.write_text(yaml.safe_dump({"parameters": {"model.optimizer": ["adamw"], "model.scheduler": ["cosine"]}}))
    assert sweep_main([*sweep_args(search, logs, "--n_trials", "1"), *flags]) == 0
    config = yaml.safe_load((logs / "typed-trial0" / "config.yaml").read_text())
    assert (config["model"]["optimizer"], config["model"]["scheduler"]) == ("adamw", "cosine")
    capsys.readouterr()
    for bad, says in [({"low": 1, "high": 4, "step": 0}, "step must be a number above 0"),
                      ({"low": 1, "high": 4, "step": -1}, "step must be a number above 0"),
                      ({"low": 1.0e-3, "high": 1.0e-2, "log": True, "step": 1.0e-3}, "give log or step")]:  # fmt: skip
        search.write_text(yaml.safe_dump({"parameters": {"model.lr": bad}}))
        assert sweep_main([*sweep_args(search, logs), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err


def test_ctrl_c_stops_a_sweep_in_one_line_and_running_it_again_resumes_the_trial(sweep_files):
    search, flags, logs = sweep_files
    slow = [*flags, "--trainer.max_epochs", "400"]
    worker = run_sweep_process(search, logs, slow, "--n_trials", "1", start_new_session=True)
    last = logs / "tiny-trial0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while not last.exists():
        assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()
        time.sleep(0.2)
    os.killpg(worker.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole group
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 130, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert "sweep.py" in err and "again" in err  # how to go on
    assert [t.state.name for t in study(logs).trials][-1] == "WAITING", "queued again, to resume its run"
