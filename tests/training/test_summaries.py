"""What a run tells its user: a results block that says what it tested, training time summed over a run's
processes, HPARAMS that lead with what people compare, a printed config that reads back the same, extra
loggers inside the run."""

import json
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from catdog_lightning import cli
from catdog_lightning.errors import Interrupted
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge


@pytest.mark.parametrize("which", ["best", "last"])
def test_the_results_block_says_which_checkpoint_and_epoch_it_tested(tiny_config, capsys, which):
    metrics = train(merge(tiny_config, {"trainer": {"max_epochs": 3}, "test_checkpoint": which}))
    out = capsys.readouterr().out
    tested = next(line for line in out.splitlines() if line.startswith("  tested"))
    epoch = metrics["best_epoch"] if which == "best" else 2
    assert f"{which}.ckpt: epoch {epoch} of 0-2" in tested
    if which == "best":
        assert f"the highest val/acc, {metrics['val/acc']:.4f}" in tested
    elif metrics["best_epoch"] != 2:
        assert "the end of training" in tested and "val/acc" not in tested


def test_fit_time_sums_every_process_of_a_resumed_run(tiny_config):
    class StopAt(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    config = merge(tiny_config, {"trainer": {"max_epochs": 4}, "run_name": "r"})
    with pytest.raises(Interrupted):
        train(config, callbacks=[StopAt()])
    import torch

    saved = torch.load(Path(tiny_config["logs_dir"]) / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    before = saved["callbacks"]["FitClock"]["seconds"]
    assert before > 0
    metrics = train({"ckpt_path": "last", "run_name": "r", "logs_dir": tiny_config["logs_dir"]})
    assert metrics["fit_seconds"] > before  # the first process's time, and the second's on top


def test_hparams_lead_with_what_people_compare_and_hold_the_precision(tiny_config):
    metrics = train(tiny_config)
    events = EventAccumulator(metrics["run_dir"])
    events.Reload()
    content = events.summary_metadata["_hparams_/experiment"].plugin_data.content
    names = [info.name for info in plugin_data_pb2.HParamsPluginData.FromString(content).experiment.hparam_infos]
    assert names[:6] == ["model.net.class_path", "model.lr", "data.image_size", "data.data_dir", "trainer.precision",
                         "seed_everything"]  # fmt: skip


def test_a_printed_config_reads_back_to_the_same_run(tiny_config, tmp_path, capsys):
    data = tiny_config["data"]
    flags = ["--data.data_dir", data["data_dir"], "--data.image_size", "16", "--data.cache_dir", data["cache_dir"],
             "--model.net.init_args.hidden_dims", "[16, 8]", "--trainer.accelerator", "cpu",
             "--trainer.max_epochs", "1"]  # fmt: skip
    with pytest.raises(SystemExit):
        cli.parse_flags([*flags, "--print_config"])
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert yaml.safe_load(printed.read_text())["trainer"]["enable_progress_bar"] is None  # Lightning's default
    given = cli.parse_flags(["--config", str(printed), "--logs_dir", str(tmp_path / "logs")])
    from catdog_lightning.storage.runs import RunDirectory
    from catdog_lightning.training.trainer import build_trainer

    trainer, _ = build_trainer(RunDirectory(tmp_path / "logs", "r"), dict(given["trainer"]), [])
    bars = [c for c in trainer.callbacks if isinstance(c, L.pytorch.callbacks.ProgressBar)]
    assert len(bars) == 1 and type(bars[0]).__name__ == "LogFileProgressBar"  # ours, as without the file


def test_an_extra_logger_writes_inside_the_run(tiny_config, capsys):
    data = tiny_config["data"]
    argv = ["--data.data_dir", data["data_dir"], "--data.image_size", "16", "--data.cache_dir", data["cache_dir"],
            "--model.net.init_args.hidden_dims", "[16, 8]", "--trainer.accelerator", "cpu", "--trainer.max_epochs", "2",
            "--trainer.enable_progress_bar", "false", "--logs_dir", tiny_config["logs_dir"],
            "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", "csv"]  # fmt: skip
    assert cli.main(argv) == 0
    run = Path(tiny_config["logs_dir"]) / "version_0"
    csvs = list(run.rglob("metrics.csv"))
    assert csvs and all(run / "csv" in c.parents for c in csvs)
    assert not Path("csv").exists(), "nothing outside the run"
    assert json.loads((run / "metrics.json").read_text())["test/acc"] >= 0


def test_a_logger_missing_what_it_needs_is_one_short_line(capsys):
    assert cli.main(["--trainer.logger", "CSVLogger"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 250 and "save_dir" in err and "CSVLogger" in err
