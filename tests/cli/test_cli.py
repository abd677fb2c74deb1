"""The command line: flags reach train(), and every user mistake is one line with exit code 2."""

import subprocess
import sys

import pytest
import torch
import yaml
from helpers import ROOT

from catdog_lightning import cli
from catdog_lightning.errors import ConfigError
from catdog_lightning.models import CatDogClassifier

SCRIPT = ROOT / "scripts" / "train.py"


def run_script(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_the_documented_flags(tmp_path):
    out = run_script("--help", cwd=tmp_path)
    assert out.returncode == 0
    for flag in [
        "--data.data_dir",
        "--data.batch_size",
        "--data.image_size",
        "--data.val_fraction",
        "--data.num_workers",
        "--data.augment",
        "--data.min_crop_scale",
        "--data.cache",
        "--data.cache_dir",
        "--model.net",
        "--model.lr",
        "--model.weight_decay",
        "--trainer.max_epochs",
        "--trainer.accelerator",
        "--trainer.devices",
        "--seed_everything",
        "--config",
        "--print_config",
        "--ckpt_path",
        "--run_name",
    ]:
        assert flag in out.stdout, flag
    out = run_script("--model.net.help", "mlp", cwd=tmp_path)  # a network's own settings: its class's help
    assert out.returncode == 0 and "--model.net.hidden_dims" in out.stdout and "--model.net.activation" in out.stdout


def test_print_config_shows_defaults_and_overrides(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.parse_flags(["--model.lr", "0.01", "--print_config"])
    assert exit_.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["lr"] == 0.01 and config["model"]["net"]["init_args"]["hidden_dims"] == [256, 64]
    assert config["data"]["batch_size"] == 32 and config["data"]["image_size"] == 64
    assert config["trainer"]["max_epochs"] == 20 and config["trainer"]["accelerator"] == "auto"


def test_only_given_flags_are_passed_on(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  lr: 0.005\ntrainer:\n  max_epochs: 3\n")
    given = cli.parse_flags(["--config", str(tmp_path / "c.yaml"), "--trainer.max_epochs", "5", "--ckpt_path", "last"])
    assert given == {
        "model": {"lr": 0.005},
        "trainer": {"max_epochs": 5},
        "ckpt_path": "last",
        "logs_dir": "lightning_logs",
    }


def test_shipped_cnn_configs_are_the_results_tables_rows_and_differ_only_in_size_and_epochs():
    from lab.rows import ROWS_BY_KEY

    configs = SCRIPT.parents[1] / "configs"
    assert ROWS_BY_KEY["cnn"].flags == ("--config", "configs/cnn.yaml")
    assert ROWS_BY_KEY["cnn_fast"].flags == ("--config", "configs/cnn-fast.yaml")
    cnn, fast = (cli.parse_flags(["--config", str(configs / name)]) for name in ("cnn.yaml", "cnn-fast.yaml"))
    assert (cnn["trainer"].pop("max_epochs"), fast["trainer"].pop("max_epochs")) == (90, 70)
    assert (cnn["data"].pop("image_size"), fast["data"].pop("image_size")) == (96, 64)
    assert cnn == fast and cnn["trainer"]["precision"] == "auto"
    quicker = cli.parse_flags(
        ["--config", str(configs / "cnn.yaml"), "--trainer.max_epochs", "3", "--data.data_dir", "p"]
    )
    assert quicker["trainer"] == {"max_epochs": 3, "precision": "auto"} and quicker["data"]["data_dir"] == "p"
    assert quicker["model"]["net"]["init_args"]["convs_per_block"] == 2  # the rest of the recipe stays


def test_the_net_flag_takes_every_short_name_and_class_paths():
    from catdog_lightning.models.backbones import BACKBONES
    from catdog_lightning.models.nets import SHORT_NAMES, expand

    assert SHORT_NAMES == ("mlp", "cnn", *BACKBONES) and {"efficientnet_lite0", "resnet18"} <= set(SHORT_NAMES)
    for name in SHORT_NAMES:
        parsed, short = expand(cli.parse_flags(["--model.net", name])["model"]["net"]), expand(name)
        assert parsed["class_path"] == short["class_path"] and parsed["init_args"].get("arch") == short[
            "init_args"
        ].get("arch")
    flags = ["--model.net", "cnn", "--model.net.init_args.channels", "[4, 8]"]  # init_args after a short name
    assert cli.parse_flags(flags)["model"]["net"]["init_args"]["channels"] == [4, 8]
    assert cli.main(["--model.net", "vgg16"]) == 2
    with pytest.raises(ConfigError, match="--model.net.init_args.arch must be one of"):
        CatDogClassifier(net={"class_path": "catdog_lightning.models.PretrainedNet", "init_args": {"arch": "vgg16"}})


def test_flags_reach_train(tiny_dataset, tmp_path):
    """The command line through to a real run: the settings train() used, read back from its files."""
    logs = tmp_path / "logs"
    argv = ["--data.data_dir", str(tiny_dataset), "--data.image_size", "16", "--data.cache_dir", str(tmp_path / "c"),
            "--model.net.init_args.hidden_dims", "[32, 8]", "--model.net.init_args.activation", "tanh",
            "--model.lr", "0.003",
            "--seed_everything", "3", "--run_name", "x", "--logs_dir", str(logs), "--trainer.max_epochs", "1",
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]  # fmt: skip
    assert cli.main(argv) == 0
    saved = yaml.safe_load((logs / "x" / "config.yaml").read_text())
    assert saved["data"]["data_dir"] == str(tiny_dataset) and saved["data"]["image_size"] == 16
    assert saved["seed_everything"] == 3 and saved["trainer"]["max_epochs"] == 1
    hparams = torch.load(logs / "x" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    net = hparams["net"]["init_args"]
    assert net["hidden_dims"] == [32, 8] and net["activation"] == "tanh" and hparams["lr"] == 0.003
    assert hparams["image_size"] == 16  # the net's input follows --data.image_size


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--model.lr", "-1"], "--model.lr must be positive"),
        (["--model.net.init_args.hidden_dims", "[]"], "--model.net.init_args.hidden_dims must be a non-empty list"),
        (["--data.val_fraction", "1.5"], "--data.val_fraction must be in [0, 1)"),
        (["--data.val_fraction", "0"], "--data.val_fraction 0 leaves no validation images"),
        (["--model.net.init_args.activation", "gelu"], "--model.net.init_args.activation"),
        (["--model.lr", "abc"], "--model.lr: expected a number, got abc"),
        (["--trainer.max_epoch", "3"], "unknown flag --trainer.max_epoch (did you mean --trainer.max_epochs?)"),
        (["--no_such_flag", "1"], "unknown flag --no_such_flag"),
        (["--trainer.max_epochs", "five"], "--trainer.max_epochs: expected a whole number (or null), got five"),
        (
            ["--model.net", "efficientnet_lite"],
            "--model.net efficientnet_lite: not a short name nor module.ClassName (did you mean efficientnet_lite2?)",
        ),
        (["--data.data_dir", "does/not/exist"], "does/not/exist does not exist"),
        (["--ckpt_path", "last"], "--ckpt_path last: no checkpoints/last.ckpt"),
        (["--ckpt_path", "missing.ckpt"], "--ckpt_path missing.ckpt: no such file"),
        # values that once ended in tracebacks or huge allocations: refused before any work, with the reason
        (["--trainer.max_epochs", "0"], "--trainer.max_epochs must be at least 1"),
        (["--data.batch_size", str(10**30)], "--data.batch_size must be between 1 and 65,536"),
        (["--data.image_size", "100000"], "--data.image_size must be between 8 and 1024"),
        (["--seed_everything", str(2**32)], "--seed_everything must be between 0 and 2**32 - 1"),
        (["--data.split_seed", "-1"], "--data.split_seed must be between 0 and 2**32 - 1"),
        (
            ["--model.net.init_args.hidden_dims", "[1000000000]"],
            "--model.net.init_args.hidden_dims: that network would hold",
        ),
        (
            ["--model.net", "cnn", "--model.net.init_args.channels", "[100000, 100000]"],
            "--model.net.init_args.channels: that network would",
        ),
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv, expected, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_error_from_a_real_process_has_no_traceback(tmp_path):
    (tmp_path / "only_cats" / "train" / "cat").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "only_cats" / "train" / "cat" / "a.jpg")
    out = run_script("--data.data_dir", "only_cats", "--data.cache", "false", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: ") and "only cat images" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_log_file_gets_one_readable_line_per_epoch(tiny_config, tmp_path):
    """stdout into a file: no carriage-return redraws, no banners or tips, one line per epoch with its metrics."""
    data = tiny_config["data"]
    out = run_script(
        "--data.data_dir", data["data_dir"], "--data.image_size", "16", "--data.cache_dir", data["cache_dir"],
        "--model.net.init_args.hidden_dims", "[16, 8]", "--trainer.accelerator", "cpu", "--trainer.max_epochs", "12",
        "--logs_dir", tiny_config["logs_dir"], cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    log = out.stdout
    assert "\r" not in log and "\x1b" not in log and len(log.encode()) < 5000
    assert "Tip" not in log + out.stderr and "GPU available" not in log + out.stderr
    epochs = [line for line in log.splitlines() if line.startswith("Epoch ")]
    assert [line.split(":")[0] for line in epochs] == [f"Epoch {i}" for i in range(12)]
    assert all("val/acc=" in line and "train/loss=" in line for line in epochs)
    assert "\nResults\n  tested      best.ckpt: epoch " in log


def test_a_data_error_is_the_only_line(tmp_path):
    out = run_script("--data.data_dir", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: --data.data_dir")


def test_a_config_file_s_mistakes_are_all_named_with_the_file(tmp_path, capsys):
    typos = tmp_path / "typos.yaml"
    typos.write_text("data:\n  batchsize: 3\n  imagesize: 4\nmodel:\n  lr: 0.1\n")
    assert cli.main(["--config", str(typos)]) == 2
    err = capsys.readouterr().err
    assert str(typos) in err and "data.batchsize (did you mean data.batch_size?)" in err
    assert "data.imagesize (did you mean data.image_size?)" in err and err.count("\n") == 1
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [1, 2\n")
    assert cli.main(["--config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"{broken}: not valid YAML (line 2" in err and "<unicode string>" not in err


def test_every_shipped_recipe_parses_and_is_a_results_row():
    from catdog_lightning.models.nets import SHORT_NAMES, short_name
    from lab.rows import ROWS

    configs = SCRIPT.parents[1] / "configs"
    rows = {row.flags[row.flags.index("--config") + 1] for row in ROWS if "--config" in row.flags}
    recipes = sorted(configs.glob("*.yaml"))
    assert {f"configs/{p.name}" for p in recipes} == rows  # every recipe measured, every measured recipe shipped
    for recipe in recipes:  # each goes through train.py's parser and checks, as --config gives it
        settings = cli.parse_flags(["--config", str(recipe)])
        assert short_name(settings["model"]["net"]) in SHORT_NAMES and settings["trainer"]["max_epochs"] >= 1


@pytest.mark.parametrize("given", ["my_callbacks", "[my_callbacks]", "[my_callbacks, other]"])
def test_allow_modules_takes_one_module_or_a_list(given):
    flags = cli.parse_flags(["--allow_modules", given])
    assert flags["allow_modules"][0] == "my_callbacks" and len(flags["allow_modules"]) == given.count(",") + 1


def test_a_library_call_changes_nothing_process_wide(tiny_config):
    """train() from a notebook: the thread hook, the warning filters and their printer are the caller's after."""
    import os
    import threading
    import warnings

    import catdog_lightning

    hook, filters, show = threading.excepthook, list(warnings.filters), warnings.showwarning
    environment = dict(os.environ)
    catdog_lightning.train(tiny_config)
    assert threading.excepthook is hook
    assert warnings.filters == filters and warnings.showwarning is show
    # The run's name for DDP's processes is not left behind. (Seeding is the run's purpose: Lightning's
    # seed_everything records the seed for DDP's processes and DataLoader workers, as it seeds the RNGs.)
    seeded = {"PL_GLOBAL_SEED", "PL_SEED_WORKERS"}
    assert {k: v for k, v in os.environ.items() if k not in seeded} == {
        k: v for k, v in environment.items() if k not in seeded
    }


def test_our_warnings_are_one_line_in_words(tiny_dataset, tmp_path):
    """A skipped file, as a user sees it from train.py: `warning: ...`, not Python's path:line: Category format."""
    import shutil

    data = tmp_path / "photos"
    shutil.copytree(tiny_dataset, data)
    (data / "train" / "cat" / "broken.jpg").write_bytes(b"not a picture")
    out = run_script(
        "--data.data_dir", str(data), "--data.image_size", "16", "--model.net.init_args.hidden_dims", "[16, 8]",
        "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    (line,) = [line for line in out.stderr.splitlines() if "broken.jpg" in line]
    assert line.startswith("warning: Skipped 1 unreadable image(s): ") and "Warning" not in out.stderr
    assert ".py:" not in out.stderr
