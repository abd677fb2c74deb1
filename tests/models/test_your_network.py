"""A network of your own: one module outside the package, named by class_path, trained, resumed and used with no
edit to catdog_lightning; and a class_path is data everywhere, a checkpoint's included."""

import json

import pytest
import torch
from helpers import net_spec

from catdog_lightning import cli
from catdog_lightning.errors import ConfigError
from catdog_lightning.models.loading import load_model
from catdog_lightning.storage.checkpoints import read_checkpoint
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge

MY_NET = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """Average-pooled pixels, one hidden layer, one logit."""

    def __init__(self, image_size: int = 64, width: int = 8, pool: int = 4):
        super().__init__()
        side = image_size // pool
        self.layers = nn.Sequential(nn.AvgPool2d(pool), nn.Flatten(), nn.Linear(3 * side * side, width), nn.ReLU(),
                                    nn.Linear(width, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images).squeeze(-1)
'''
# A module whose import leaves a mark: what must never happen before the allow-list has passed it.
MARKER = "from pathlib import Path\nPath({mark!r}).write_text('imported')\nclass Net:\n    pass\n"


@pytest.fixture
def my_module(tmp_path, monkeypatch):
    (tmp_path / "mymodule.py").write_text(MY_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "mymodule"


def flags_of(config: dict) -> list[str]:
    data = config["data"]
    return ["--data.data_dir", data["data_dir"], "--data.image_size", "16", "--data.cache_dir", data["cache_dir"],
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--logs_dir", config["logs_dir"],
            "--seed_everything", "3"]  # fmt: skip


def test_a_network_from_outside_the_package_trains_resumes_and_predicts(my_module, tiny_config, capsys):
    flags = [*flags_of(tiny_config), "--model.net.class_path", "mymodule.TinyNet", "--model.net.init_args.width", "6",
             "--run_name", "mine"]  # fmt: skip
    assert cli.main([*flags, "--trainer.max_epochs", "1"]) == 2  # not allowed yet: nothing imported
    assert "--allow_modules mymodule" in capsys.readouterr().err
    assert cli.main([*flags, "--trainer.max_epochs", "1", "--allow_modules", "mymodule"]) == 0
    logs = tiny_config["logs_dir"]
    resume = ["--ckpt_path", "last", "--run_name", "mine", "--logs_dir", logs, "--trainer.max_epochs", "2"]
    assert cli.main(resume) == 2  # the run's config.yaml names the module: allowed on the command line only
    assert cli.main([*resume, "--allow_modules", "mymodule"]) == 0
    metrics = json.loads(open(f"{logs}/mine/metrics.json").read())
    assert metrics["epochs_trained"] == 2
    saved = read_checkpoint(f"{logs}/mine/checkpoints/last.ckpt")
    assert saved["hyper_parameters"]["net"] == {
        "class_path": "mymodule.TinyNet",
        "init_args": {"width": 6, "pool": 4},
    }
    capsys.readouterr()
    photos = tiny_config["data"]["data_dir"] + "/test"
    ckpt = ["--ckpt_path", f"{logs}/mine/checkpoints/last.ckpt"]
    assert cli.predict_main([photos, *ckpt]) == 2
    assert cli.predict_main([photos, *ckpt, "--allow_modules", "mymodule"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 16 and all(line.split("\t")[2] in ("cat", "dog") for line in lines)


@pytest.mark.parametrize("class_path", ["os.system", "evil_net.Net"])
def test_a_checkpoint_naming_code_as_its_network_is_refused_before_any_import(
    tiny_config, tmp_path, monkeypatch, capsys, class_path
):
    mark = tmp_path / "imported"
    (tmp_path / "evil_net.py").write_text(MARKER.format(mark=str(mark)))
    monkeypatch.syspath_prepend(str(tmp_path))
    ckpt = train(merge(tiny_config, {"trainer": {"max_epochs": 1}}))["tested_checkpoint"]
    saved = torch.load(ckpt, weights_only=True)
    saved["hyper_parameters"]["net"] = {"class_path": class_path, "init_args": {"command": f"touch {mark}"}}
    torch.save(saved, ckpt)
    with pytest.raises(ConfigError, match=f"names {class_path}, outside Lightning"):
        load_model(ckpt)
    for main, argv in (
        (cli.predict_main, [tiny_config["data"]["data_dir"], "--ckpt_path", ckpt]),
        (cli.export_main, ["--ckpt_path", ckpt, "--output", str(tmp_path / "m.onnx")]),
        (cli.evaluate_main, ["--ckpt_path", ckpt]),
        (cli.main, ["test", "--ckpt_path", ckpt]),
        (cli.main, ["--ckpt_path", ckpt, "--logs_dir", tiny_config["logs_dir"]]),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "nothing was imported or run" in err
    assert not mark.exists()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--model.arch", "cnn"], "--model.arch (renamed: now --model.net; see docs/your-network.md)"),
        (["--model.hidden_dims", "[8]"], "(renamed: now --model.net.init_args.hidden_dims"),
        (["--model.net", "os.system"], "--model.net: model.net names os.system, outside Lightning"),
        (["--model.net", "vgg16"], "vgg16"),
    ],
)
def test_renamed_and_refused_net_flags_are_one_line(argv, says, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


def test_a_settings_file_or_dict_of_before_names_the_new_setting(tmp_path, tiny_config, capsys):
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  arch: cnn\n  channels: [4, 8]\n")
    assert cli.main(["--config", str(old)]) == 2
    err = capsys.readouterr().err
    assert (
        "model.arch (renamed: now model.net" in err
        and "model.channels (renamed: now model.net.init_args.channels" in err
    )
    with pytest.raises(ConfigError, match="model.hidden_dims is now model.net.init_args.hidden_dims"):
        train(merge(tiny_config, {"model": {"hidden_dims": [8]}}))


def test_a_checkpoint_of_before_networks_were_a_parameter_says_to_retrain(tiny_config):
    ckpt = train(merge(tiny_config, {"trainer": {"max_epochs": 1}}))["tested_checkpoint"]
    saved = torch.load(ckpt, weights_only=True)
    net = saved["hyper_parameters"].pop("net")
    saved["hyper_parameters"] |= {"arch": "mlp", **net["init_args"]}
    torch.save(saved, ckpt)
    with pytest.raises(ConfigError, match="written before networks were a parameter .* retrain it"):
        load_model(ckpt)


def test_a_network_s_settings_are_its_own_and_a_resume_keeps_those_that_shape_weights(tiny_config):
    config = merge(tiny_config, {"trainer": {"max_epochs": 1}, "run_name": "r"})
    train(config)
    resume = {"ckpt_path": "last", "run_name": "r", "logs_dir": tiny_config["logs_dir"], "trainer": {"max_epochs": 2}}
    with pytest.raises(ConfigError, match="--model.net.init_args.hidden_dims \\[8\\] differs"):
        train({**resume, "model": {"net": net_spec(hidden_dims=[8])}})
    with pytest.raises(ConfigError, match="--model.net.class_path catdog_lightning.models.cnn.SmallCNN differs"):
        train({**resume, "model": {"net": "cnn"}})
    with pytest.raises(ConfigError, match="--model.net.init_args.dropout 0.1 differs"):  # the MLP's layers differ
        train({**resume, "model": {"net": net_spec(dropout=0.1)}})
    assert train(resume)["epochs_trained"] == 2


def test_train_py_finds_your_module_in_the_folder_it_runs_in(my_module, tiny_config, tmp_path):
    """As a user runs it: scripts/ is on the path, not the folder; the folder's module is found, after all installed."""
    import subprocess
    import sys

    from helpers import ROOT

    argv = [sys.executable, str(ROOT / "scripts" / "train.py"), *flags_of(tiny_config), "--trainer.max_epochs", "1",
            "--model.net", "mymodule.TinyNet", "--allow_modules", "mymodule"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\nResults\n" in done.stdout
