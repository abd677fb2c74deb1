"""Faults a run meets (crafted checkpoints, divergence, full or missing disks, odd file names, Ctrl-C): each is
one line and exit code 2 (130 for Ctrl-C), never a traceback, and nothing already saved is lost."""

import errno
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from helpers import train_script, write_image

from catdog_lightning.cli import evaluate_main, main, predict_main, run_cli
from catdog_lightning.errors import ConfigError
from catdog_lightning.storage.checkpoints import AtomicCheckpointIO
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge


@pytest.fixture(scope="module")
def trained_ckpt(tiny_dataset, tmp_path_factory):
    from helpers import make_tiny_config

    tmp = tmp_path_factory.mktemp("faults")
    metrics = train(merge(make_tiny_config(tiny_dataset, tmp), {"trainer": {"max_epochs": 1}}))
    return Path(metrics["best_checkpoint"]), make_tiny_config(tiny_dataset, tmp)


def crafted(ckpt: Path, tmp_path: Path, kind: str) -> Path:
    saved = torch.load(ckpt, weights_only=True)
    if kind == "state_dict_mismatch":
        saved["state_dict"].pop(next(k for k in saved["state_dict"] if k.startswith("net.")))
    elif kind == "unknown_hparam":
        saved["hyper_parameters"]["no_such_setting"] = 1
    elif kind == "bad_value":
        saved["hyper_parameters"]["lr"] = -1.0
    elif kind == "huge_allocation":
        saved["hyper_parameters"]["hidden_dims"] = [10**13]
    elif kind == "nan_weights":
        first = next(k for k, v in saved["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
        saved["state_dict"][first][0] = float("nan")
    path = tmp_path / f"{kind}.ckpt"
    torch.save(saved, path)
    return path


@pytest.mark.parametrize(
    "kind", ["state_dict_mismatch", "unknown_hparam", "bad_value", "huge_allocation", "nan_weights"]
)
def test_crafted_checkpoints_are_one_line_for_train_and_predict(trained_ckpt, tmp_path, kind, capsys):
    ckpt, config = trained_ckpt
    path = crafted(ckpt, tmp_path, kind)
    argv = train_script(config, "--ckpt_path", str(path), "--logs_dir", str(tmp_path / "logs"))[2:]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(path) in err, err
    assert predict_main(["--ckpt_path", str(path), config["data"]["data_dir"]]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    if kind == "nan_weights":
        assert "not finite" in err


def test_a_diverging_run_stops_with_one_line_naming_the_epoch(tiny_config):
    import lightning as L

    class Poison(L.Callback):  # what a far too high learning rate does, a few steps in
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1:
                with torch.no_grad():
                    next(pl_module.parameters()).fill_(float("nan"))

    with pytest.raises(ConfigError, match=r"loss became nan at epoch 1.*diverged.*--model.lr 0.001") as info:
        train(tiny_config, callbacks=[Poison()])
    saved = torch.load(Path(str(info.value).split("checkpoint is ")[1].rstrip(".")), weights_only=True)
    assert all(v.isfinite().all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_a_full_cache_disk_goes_on_uncached(tiny_config, monkeypatch, caplog):
    import catdog_lightning.data.cache as cache

    def disk_full(path, write):  # torch's serializer reports ENOSPC as a RuntimeError
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(cache, "atomic_write", disk_full)
    with caplog.at_level(logging.WARNING):
        metrics = train(tiny_config)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert "goes on uncached" in caplog.text and "MB in" in caplog.text


def test_a_disk_that_fills_while_training_is_one_line_and_keeps_what_was_saved(tiny_config, monkeypatch):
    real, saves = AtomicCheckpointIO.save_checkpoint, []

    def fills_up(self, checkpoint, path, storage_options=None):
        saves.append(path)
        if len(saves) > 2:  # best and last of epoch 0 made it
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", fills_up)
    with pytest.raises(ConfigError, match="could not write in .*No space left.*--ckpt_path last"):
        train(merge(tiny_config, {"trainer": {"max_epochs": 3}}))
    last = Path(tiny_config["logs_dir"]) / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0


def test_logs_dir_that_cannot_be_a_folder_is_one_line(tiny_config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot make the run folder"):
        train(merge(tiny_config, {"logs_dir": str(blocker)}))


def test_predictions_of_a_file_name_that_is_not_utf8(trained_ckpt, tmp_path):
    ckpt, _ = trained_ckpt
    name = os.fsdecode(b"photo-\xff.jpg")  # bytes no UTF-8 decoder accepts, as Linux allows
    write_image(tmp_path / "in" / name)
    out = tmp_path / "preds.csv"
    assert predict_main(["--ckpt_path", str(ckpt), str(tmp_path / "in"), "--output", str(out)]) == 0
    assert b"photo-\xff.jpg" in out.read_bytes()
    assert predict_main(["--ckpt_path", str(ckpt), str(tmp_path / "in"), "--output", str(tmp_path / "p.json")]) == 0
    assert "photo-" in json.loads((tmp_path / "p.json").read_text())[0]["path"]


def test_evaluating_a_loose_checkpoint_writes_its_report_beside_it(trained_ckpt, tmp_path):
    ckpt, config = trained_ckpt
    loose = tmp_path / "models" / "cat-model.ckpt"
    loose.parent.mkdir()
    loose.write_bytes(ckpt.read_bytes())
    assert evaluate_main(["--ckpt_path", str(loose)]) == 0
    assert (tmp_path / "models" / "cat-model.evaluation.json").is_file()
    assert not (tmp_path / "evaluation.json").exists()


def test_ctrl_c_before_training_is_one_line_and_130(capsys):
    def decoding(_):
        raise KeyboardInterrupt

    assert run_cli(decoding, []) == 130
    assert capsys.readouterr().err.strip() == "interrupted before training began; nothing was saved."


def test_a_signal_during_the_last_validation_still_stops_with_its_exit_code(tiny_config):
    import signal

    import lightning as L

    from catdog_lightning.errors import Interrupted

    class TermDuringLastValidation(L.Callback):
        def on_validation_start(self, trainer, pl_module):
            if not trainer.sanity_checking and trainer.current_epoch == trainer.max_epochs - 1:
                os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted) as info:
        train(tiny_config, callbacks=[TermDuringLastValidation()])
    assert info.value.exit_code == 143
    last = Path(tiny_config["logs_dir"]) / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1  # the last epoch, complete


@pytest.mark.parametrize("trainer", [{"limit_train_batches": 0}, {"max_steps": 0}])
def test_a_run_that_saves_no_checkpoint_is_one_line(tiny_config, trainer):
    with pytest.raises(ConfigError, match="training saved no best.ckpt to test"):
        train(merge(tiny_config, {"trainer": trainer}))


def test_a_run_diverging_before_its_first_checkpoint_says_none_was_saved(tiny_config):
    import lightning as L

    class Poison(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))

    with pytest.raises(ConfigError) as info:
        train(tiny_config, callbacks=[Poison()])
    message = str(info.value)
    assert "no checkpoint was saved" in message and "last.ckpt" not in message and "e.g. inf" not in message
