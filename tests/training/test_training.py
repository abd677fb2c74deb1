"""A real Trainer on a tiny generated dataset, through the same train() that scripts/train.py calls."""

import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from helpers import make_tiny_config, net_spec
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from catdog_lightning.errors import ConfigError
from catdog_lightning.models import CatDogClassifier
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge


def scalars(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def with_(config, **sections):
    return merge(config, sections)


@pytest.fixture(scope="module")
def finished_run(tiny_dataset, tmp_path_factory):
    """One 2-epoch run shared by the read-only tests below."""
    config = make_tiny_config(tiny_dataset, tmp_path_factory.mktemp("run"))
    metrics = train(config)
    return metrics, Path(metrics["run_dir"])


def test_run_directory_holds_everything(finished_run):
    metrics, run = finished_run
    assert run.name == "version_0"
    for name in ["hparams.yaml", "config.yaml", "metrics.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt"]:
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert list(run.glob("events.out.tfevents.*"))


def test_metrics_json_holds_probabilities_of_the_best_checkpoint(finished_run):
    metrics, run = finished_run
    saved = json.loads((run / "metrics.json").read_text())
    for key in ["val/acc", "test/acc", "test/f1", "test/auroc"]:
        assert 0.0 <= saved[key] <= 1.0, key
    assert saved["test/loss"] > 0
    assert 0 <= saved["best_epoch"] < saved["epochs_trained"] == 2  # counted from 0, as Lightning's log
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert saved["best_epoch"] == saved["tested_epoch"] == best["epoch"]
    assert saved["tested_checkpoint"] == str(run / "checkpoints" / "best.ckpt")
    assert saved == json.loads(json.dumps(metrics))


def test_test_checkpoint_last_measures_the_end_of_training(tiny_config):
    from catdog_lightning.training.stages import evaluate_checkpoint

    config = with_(tiny_config, trainer={"max_epochs": 4}, model={"scheduler": "cosine"})
    metrics = train({**config, "test_checkpoint": "last"})
    last = Path(metrics["run_dir"]) / "checkpoints" / "last.ckpt"
    assert metrics["tested_checkpoint"] == str(last)
    assert metrics["test/loss"] == pytest.approx(evaluate_checkpoint(last)["test/loss"], abs=1e-6)
    assert yaml.safe_load((Path(metrics["run_dir"]) / "config.yaml").read_text())["test_checkpoint"] == "last"
    with pytest.raises(ConfigError, match="--test_checkpoint must be best or last"):
        train({**tiny_config, "test_checkpoint": "first"})


def test_tensorboard_events_have_epoch_metrics_and_the_hparams_tab(finished_run):
    _, run = finished_run
    acc = scalars(run)
    tags = set(acc.Tags()["scalars"])
    assert {
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "test/acc",
        "test/f1",
        "test/auroc",
    } <= tags
    assert len(acc.Scalars("train/acc")) == 2  # once per epoch, over the whole epoch
    assert "hp_metric" not in tags
    plugin = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugin and b"val/acc" in plugin["_hparams_/experiment"]


def test_val_acc_best_is_the_running_max(finished_run):
    _, run = finished_run
    acc = scalars(run)
    vals = [e.value for e in acc.Scalars("val/acc")]
    best = [e.value for e in acc.Scalars("val/acc_best")]
    assert best == pytest.approx([max(vals[: i + 1]) for i in range(len(best))])


def test_checkpoints_load_with_no_arguments_and_weights_only(finished_run):
    _, run = finished_run
    for name in ["best.ckpt", "last.ckpt"]:
        torch.load(run / "checkpoints" / name, weights_only=True)  # no pickled objects beyond primitives
        model = CatDogClassifier.load_from_checkpoint(run / "checkpoints" / name, weights_only=True)
        assert model.hparams.net["init_args"]["hidden_dims"] == [16, 8] and model.hparams.image_size == 16


def test_config_yaml_records_the_resolved_settings(finished_run):
    _, run = finished_run
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["image_size"] == 16 and config["data"]["val_fraction"] == 0.1
    assert config["model"]["net"]["init_args"]["hidden_dims"] == [16, 8] and config["model"]["lr"] == 1e-3
    assert config["trainer"]["max_epochs"] == 2 and config["seed_everything"] == 7


def test_last_ckpt_is_rewritten_every_epoch(tiny_config):
    """A stale last.ckpt (Lightning's save_last on a monitored checkpoint) would hold an old epoch."""
    metrics = train(with_(tiny_config, trainer={"max_epochs": 3}, model={"lr": 1e-9}))  # val/acc never improves
    last = torch.load(Path(metrics["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == metrics["global_step"]


def test_resume_continues_the_same_run_and_step(tiny_config):
    first = train(tiny_config)
    run = Path(first["run_dir"])
    events_before = set(run.glob("events.out.tfevents.*"))
    resumed = train({"ckpt_path": "last", "trainer": {"max_epochs": 4}, "logs_dir": tiny_config["logs_dir"]})
    assert resumed["run_dir"] == str(run)
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"], "no new version_N on resume"
    assert resumed["epochs_trained"] == 4 and resumed["global_step"] == 2 * first["global_step"]
    steps = [e.step for e in scalars(run).Scalars("train/loss")]
    assert steps == sorted(steps) and len(steps) == 4, "one continuous curve"
    assert set(run.glob("events.out.tfevents.*")) > events_before
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 4 and config["data"]["image_size"] == 16  # saved settings kept


def test_resume_restores_the_optimizer_state(tiny_config):
    first = train(tiny_config)
    last = Path(first["run_dir"]) / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["optimizer_states"][0]["state"]
    assert state and all(int(s["step"]) == first["global_step"] for s in state.values())


def test_resume_by_path_and_refusals(tiny_config, tmp_path):
    first = train(tiny_config)
    ckpt = Path(first["run_dir"]) / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match="--model.net.init_args.hidden_dims"):
        train(
            {"ckpt_path": str(ckpt), "model": {"net": net_spec(hidden_dims=[32])}, "logs_dir": tiny_config["logs_dir"]}
        )
    with pytest.raises(ConfigError, match="--data.image_size"):
        train({"ckpt_path": str(ckpt), "data": {"image_size": 32}, "logs_dir": tiny_config["logs_dir"]})
    with pytest.raises(ConfigError, match="no checkpoints/last.ckpt"):
        train({"ckpt_path": "last", "logs_dir": str(tmp_path / "empty-logs")})
    with pytest.raises(ConfigError, match="already holds a run"):
        train(with_(tiny_config, run_name="version_0"))
    resumed = train({"ckpt_path": str(ckpt), "trainer": {"max_epochs": 3}, "logs_dir": tiny_config["logs_dir"]})
    assert resumed["run_dir"] == first["run_dir"] and resumed["epochs_trained"] == 3


def test_named_runs_and_version_numbering(tiny_config):
    assert Path(train(tiny_config)["run_dir"]).name == "version_0"
    assert Path(train(with_(tiny_config, run_name="baseline"))["run_dir"]).name == "baseline"
    assert Path(train(tiny_config)["run_dir"]).name == "version_1"


def test_a_bad_model_setting_is_refused_before_a_photo_is_decoded(tiny_config):
    """The classes come from a listing of train/, so the model is built (and its settings checked) before the
    photos are decoded: a typo costs no decode, and the decode cache stays empty."""
    cache = Path(tiny_config["data"]["cache_dir"])
    with pytest.raises(ConfigError, match="--model.lr must be positive"):
        train(merge(tiny_config, {"model": {"lr": -1.0}}))
    assert not cache.exists() or not any(cache.iterdir())
    metrics = train(tiny_config)  # the same folder, the flag mended: decoded (and cached) once
    assert any(cache.iterdir()) and 0 <= metrics["test/acc"] <= 1


def test_corrupt_checkpoint_is_one_clear_error(tiny_config, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        train({"ckpt_path": str(bad), "logs_dir": tiny_config["logs_dir"]})


def test_tensorboard_shows_pictures_the_confusion_matrix_the_pr_curve_and_the_graph(finished_run):
    _, run = finished_run
    acc = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"val/predictions", "val/confusion_matrix"} <= set(tags["images"])
    assert len(acc.Images("val/predictions")) == 2  # once per validation epoch
    grid = acc.Images("val/predictions")[0]
    assert (grid.width, grid.height) == (8 * 96, 96 + 14)  # the tiny val split's 2 cats + 2 dogs fit one row
    assert "test/pr_curve" in tags["tensors"]
    assert acc.SummaryMetadata("test/pr_curve").plugin_data.plugin_name == "pr_curves"
    assert tags["graph"]


def test_log_images_false_writes_no_pictures(tiny_config):
    metrics = train(merge(tiny_config, {"log_images": False}))
    acc = EventAccumulator(metrics["run_dir"])
    acc.Reload()
    assert not acc.Tags()["images"] and not acc.Tags()["graph"]


def test_cnn_fit_with_cosine_schedule_through_train(tiny_config):
    metrics = train(merge(tiny_config, {"model": {"net": net_spec("cnn", channels=[4, 8]), "scheduler": "cosine"}}))
    model = CatDogClassifier.load_from_checkpoint(metrics["best_checkpoint"], weights_only=True)
    assert type(model.net).__name__ == "SmallCNN" and 0 <= metrics["test/acc"] <= 1
    saved = torch.load(metrics["best_checkpoint"], weights_only=True)
    assert saved["lr_schedulers"][0]["T_max"] == 2


def test_onecycle_schedule_and_early_stopping_reach_the_trainer(tiny_config):
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping

    seen = {}

    class Inspect(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["stopper"] = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
            seen["scheduler"] = trainer.lr_scheduler_configs[0]

    train(
        merge(
            tiny_config,
            {"model": {"scheduler": "onecycle"}, "early_stopping_patience": 3, "trainer": {"max_epochs": 3}},
        ),
        callbacks=[Inspect()],
    )
    (stopper,) = seen["stopper"]
    assert stopper.monitor == "val/acc" and stopper.mode == "max" and stopper.patience == 3
    assert type(seen["scheduler"].scheduler).__name__ == "OneCycleLR" and seen["scheduler"].interval == "step"
    assert seen["scheduler"].scheduler.total_steps == 3 * 5  # 36 training images / batch 8 = 5 steps a epoch


def test_resume_refuses_a_different_architecture_or_normalisation(tiny_config):
    train(tiny_config)
    with pytest.raises(ConfigError, match="--model.net.class_path catdog_lightning.models.cnn.SmallCNN differs"):
        train({"ckpt_path": "last", "model": {"net": net_spec("cnn")}, "logs_dir": tiny_config["logs_dir"]})
    with pytest.raises(ConfigError, match="--data.normalize True differs"):
        train({"ckpt_path": "last", "data": {"normalize": True}, "logs_dir": tiny_config["logs_dir"]})
    with pytest.raises(ConfigError, match="--model.net.init_args.hidden_dims \\[8\\] differs"):
        train({"ckpt_path": "last", "model": {"net": net_spec(hidden_dims=[8])}, "logs_dir": tiny_config["logs_dir"]})


def test_normalize_statistics_are_saved_in_the_checkpoint_and_restored(tiny_config):
    seen = {}

    class Keep(L.Callback):
        def on_train_end(self, trainer, pl_module):
            seen["stats"] = trainer.datamodule.channel_stats()
            seen["images"] = trainer.datamodule.test_set.images.float() / 255
            pl_module.eval()
            with torch.no_grad():
                seen["probs"] = torch.sigmoid(pl_module(seen["images"]))

    metrics = train(
        with_(tiny_config, data={"normalize": True}, model={"net": net_spec("cnn", channels=[4, 8])}), [Keep()]
    )
    mean, std = seen["stats"]
    assert not torch.allclose(std, torch.ones(3))  # real statistics, not the identity
    saved = torch.load(Path(metrics["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(saved["standardize.mean"], mean) and torch.equal(saved["standardize.std"], std)

    reloaded = CatDogClassifier.load_from_checkpoint(Path(metrics["run_dir"]) / "checkpoints" / "last.ckpt").eval()
    with torch.no_grad():
        assert torch.equal(torch.sigmoid(reloaded(seen["images"])), seen["probs"])
        reloaded.standardize.set_statistics(torch.zeros(3), torch.ones(3))
        assert not torch.allclose(torch.sigmoid(reloaded(seen["images"])), seen["probs"])  # the stats matter


def test_hparams_tab_holds_every_setting_and_the_metrics_users_sort_by(finished_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, run = finished_run
    plugin = scalars(run).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    for name in ("data.image_size", "model.lr", "trainer.max_epochs", "seed_everything", "test_checkpoint"):
        assert name in hparams, name
    assert hparams["trainer.max_epochs"].number_value == 2 and hparams["test_checkpoint"].string_value == "best"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/experiment"]).experiment
    shown = [m.name.tag for m in experiment.metric_infos]
    assert shown[:3] == ["val/acc_best", "test/acc", "test/auroc"]


def test_learning_rate_curve_and_user_loggers_and_callbacks(tiny_config, tmp_path):
    """A scheduled run logs its learning rate; --trainer.logger and --trainer.callbacks add to ours (LightningCLI)."""
    config = merge(
        tiny_config,
        {
            "model": {"scheduler": "cosine", "lr": 0.01},
            "trainer": {
                "max_epochs": 3,
                "logger": {"class_path": "CSVLogger", "init_args": {"save_dir": "csv"}},
                "callbacks": [{"class_path": "lightning.pytorch.callbacks.Timer"}],
            },
        },
    )
    metrics = train(config)
    lr_tags = [t for t in scalars(Path(metrics["run_dir"])).Tags()["scalars"] if t.startswith("lr-")]
    assert lr_tags, "LearningRateMonitor is on when a schedule is set"
    rates = [e.value for e in scalars(Path(metrics["run_dir"])).Scalars(lr_tags[0])]
    assert rates[0] == pytest.approx(0.01) and rates == sorted(rates, reverse=True)  # cosine: falling
    csv_files = list((Path(metrics["run_dir"]) / "csv").rglob("metrics.csv"))
    assert csv_files and "val/acc" in csv_files[0].read_text().splitlines()[0]
    with pytest.raises(ConfigError, match="cannot import"):
        train(merge(tiny_config, {"run_name": "x", "trainer": {"callbacks": [{"class_path": "NoSuchCallback"}]}}))


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_training_further_replans_the_schedule_for_the_new_horizon(tiny_config, tmp_path, scheduler):
    """3 epochs, then resumed to 5: from the resume on, the learning rates are those of a run planned for 5."""
    trainer = {"max_epochs": 3, "log_every_n_steps": 1}  # the rate of every step in TensorBoard
    config = merge(tiny_config, {"model": {"scheduler": scheduler, "lr": 0.01}, "trainer": trainer})

    def rates(logs):
        acc = scalars(Path(logs) / "version_0")
        (tag,) = [t for t in acc.Tags()["scalars"] if t.startswith("lr-")]
        return {e.step: e.value for e in acc.Scalars(tag)}

    train(merge(config, {"logs_dir": str(tmp_path / "extended")}))
    extended = train({"ckpt_path": "last", "logs_dir": str(tmp_path / "extended"), "trainer": {"max_epochs": 5}})
    straight = train(merge(config, {"logs_dir": str(tmp_path / "straight"), "trainer": {"max_epochs": 5}}))
    resumed_at = 3 * 5  # 36 training images, batch 8: 5 steps an epoch
    after = {s: v for s, v in rates(tmp_path / "extended").items() if s >= resumed_at}
    planned = {s: v for s, v in rates(tmp_path / "straight").items() if s >= resumed_at}
    assert after and after.keys() == planned.keys()
    for step in after:
        assert after[step] == pytest.approx(planned[step], rel=1e-6), step
    assert extended["epochs_trained"] == straight["epochs_trained"] == 5
    assert all(np.isfinite(extended[k]) for k in ("test/acc", "test/loss", "val/acc"))


class Watch(L.Callback):
    """What the Trainer really ran: training and validation batches, the dtype of the first layer's output in
    training steps, and the last epoch's train/acc."""

    def __init__(self):
        self.train_batches, self.val_batches, self.dtypes, self.train_acc = 0, 0, set(), None

    def on_fit_start(self, trainer, pl_module):
        first = next(m for m in pl_module.net.modules() if isinstance(m, torch.nn.Linear))
        first.register_forward_hook(lambda module, args, out: self.dtypes.add(out.dtype) if module.training else None)

    def on_train_batch_end(self, *args):
        self.train_batches += 1

    def on_validation_batch_end(self, trainer, *args):
        self.val_batches += not trainer.sanity_checking

    def on_train_end(self, trainer, pl_module):
        self.train_acc = float(trainer.callback_metrics["train/acc"])


def test_limit_batches_runs_that_many_training_and_validation_batches(tiny_config):
    watch = Watch()
    metrics = train(with_(tiny_config, trainer={"limit_train_batches": 2, "limit_val_batches": 1}), callbacks=[watch])
    assert (watch.train_batches, watch.val_batches, metrics["global_step"]) == (4, 2, 4)  # 2 epochs


def test_overfit_batches_learns_its_few_batches_by_heart(tiny_config):
    watch = Watch()
    config = with_(tiny_config, trainer={"overfit_batches": 2, "max_epochs": 40}, model={"lr": 0.01})
    metrics = train(config, callbacks=[watch])
    assert watch.train_batches == metrics["global_step"] == 80  # the same 2 batches, every epoch
    assert watch.train_acc == 1.0  # 16 pictures, learnt by heart


def test_profiler_reports_where_the_time_went(tiny_config, caplog):
    caplog.set_level(logging.INFO, logger="lightning.pytorch.profilers")
    train(with_(tiny_config, trainer={"profiler": "simple"}))
    assert "FIT Profiler Report" in caplog.text and "run_training_epoch" in caplog.text


def test_bf16_precision_computes_the_training_steps_in_bf16(tiny_config):
    watch = Watch()
    metrics = train(with_(tiny_config, trainer={"precision": "bf16-mixed"}), callbacks=[watch])
    assert watch.dtypes == {torch.bfloat16} and np.isfinite(metrics["test/loss"])


def test_subcommands_like_lightning_cli(tiny_config, capsys):
    from catdog_lightning.cli import main

    metrics = train(tiny_config)
    logs = ["--logs_dir", tiny_config["logs_dir"]]
    assert main(["test", "--ckpt_path", "best", *logs]) == 0
    out = capsys.readouterr().out
    assert f"test/acc     {metrics['test/acc']:.4f}" in out
    assert main(["validate", "--ckpt_path", metrics["best_checkpoint"], *logs]) == 0
    assert "val/acc" in capsys.readouterr().out
    assert main(["predict", "--ckpt_path", "last", *logs]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 16 and all(line.split("\t")[2] in ("cat", "dog") for line in lines)
    assert main(["test", *logs]) == 2
    assert "test needs --ckpt_path" in capsys.readouterr().err
    assert main(["fit", "--run_name", "again", *logs, "--data.data_dir", tiny_config["data"]["data_dir"],
                 "--data.image_size", "16", "--trainer.max_epochs", "1"]) == 0  # fmt: skip
    assert (Path(tiny_config["logs_dir"]) / "again" / "metrics.json").is_file()


def test_resuming_a_finished_run_says_it_only_tests_again(tiny_config, capsys):
    train(tiny_config)
    capsys.readouterr()
    train({"ckpt_path": "last", "logs_dir": tiny_config["logs_dir"]})
    assert "nothing to train, so it is only tested again" in capsys.readouterr().out
