"""A run folder and a --config file are data, never code: what they name is checked before anything is
imported or run, and what they hold is checked like flags."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import train_script

from catdog_lightning.cli import main
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge

BOMB = "\n".join(
    [f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]" for prev, name in zip("abcdefgh", "bcdefghi", strict=True)]
)
BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + BOMB + "\n"
# A module on the import path whose import alone would leave a mark: it must never be imported.
EVIL_MODULE = "from pathlib import Path\nPath({mark!r}).write_text('imported')\nclass Sneaky: pass\n"
GOOD_MODULE = """
import lightning as L
class CountEpochs(L.Callback):
    def __init__(self, mark):
        self.mark = mark
    def on_train_epoch_end(self, trainer, pl_module):
        with open(self.mark, "a") as fh:
            fh.write("epoch\\n")
"""


@pytest.fixture
def stopped_run(tiny_config):
    """A finished 1-epoch run, to be resumed for a second epoch: (its config.yaml, the resume argv)."""
    metrics = train(merge(tiny_config, {"trainer": {"max_epochs": 1}}))
    config_file = Path(metrics["run_dir"]) / "config.yaml"
    argv = ["--ckpt_path", "last", "--logs_dir", tiny_config["logs_dir"], "--trainer.max_epochs", "2"]
    return config_file, argv


def edit(config_file: Path, change) -> None:
    saved = yaml.safe_load(config_file.read_text())
    change(saved)
    config_file.write_text(yaml.safe_dump(saved))


def one_line_exit_2(argv, capsys, *expected: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


@pytest.mark.parametrize(
    "key, spec",
    [
        ("callbacks", [{"class_path": "os.system", "init_args": {"command": "touch {mark}"}}]),
        ("logger", {"class_path": "subprocess.run", "init_args": {"args": ["touch", "{mark}"]}}),
        ("callbacks", [{"class_path": "subprocess.Popen", "init_args": {"args": ["touch", "{mark}"]}}]),
        ("callbacks", [{"class_path": "evil_module.Sneaky"}]),
    ],
)
def test_resume_never_runs_code_its_config_yaml_names(stopped_run, tmp_path, monkeypatch, capsys, key, spec):
    config_file, argv = stopped_run
    mark = tmp_path / "ran"
    (tmp_path / "evil_module.py").write_text(EVIL_MODULE.format(mark=str(mark)))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = yaml.safe_load(yaml.safe_dump(spec).replace("{mark}", str(mark)))
    edit(config_file, lambda saved: saved["trainer"].__setitem__(key, spec))
    one_line_exit_2(argv, capsys, str(config_file), f"trainer.{key}", "nothing was imported or run")
    assert not mark.exists()


def test_a_config_file_is_checked_the_same_way_before_jsonargparse_imports_it(tmp_path, monkeypatch, capsys):
    mark = tmp_path / "ran"
    (tmp_path / "evil_module.py").write_text(EVIL_MODULE.format(mark=str(mark)))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": [{"class_path": "evil_module.Sneaky"}]}}))
    one_line_exit_2(["--config", str(config)], capsys, str(config), "trainer.callbacks[0]", "--allow_modules")
    assert not mark.exists()


def test_modules_allowed_on_the_command_line_run_and_a_file_cannot_allow_itself(
    stopped_run, tmp_path, monkeypatch, capsys
):
    config_file, argv = stopped_run
    mark = tmp_path / "epochs.txt"
    (tmp_path / "my_callbacks.py").write_text(GOOD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = [{"class_path": "my_callbacks.CountEpochs", "init_args": {"mark": str(mark)}}]
    edit(config_file, lambda saved: saved["trainer"].__setitem__("callbacks", spec))
    one_line_exit_2(argv, capsys, "my_callbacks.CountEpochs")  # not allowed yet
    config = tmp_path / "allow.yaml"
    config.write_text(yaml.safe_dump({"allow_modules": ["my_callbacks"]}))
    one_line_exit_2([*argv, "--config", str(config)], capsys, "my_callbacks.CountEpochs")  # a file cannot allow it
    assert main([*argv, "--allow_modules", "[my_callbacks]"]) == 0
    assert mark.read_text() == "epoch\n"  # the resumed epoch ran it
    assert "allow_modules" not in yaml.safe_load(config_file.read_text()), "never recorded in the run"


def test_a_class_from_an_allowed_module_must_still_be_a_callback(stopped_run, capsys):
    config_file, argv = stopped_run
    edit(config_file, lambda saved: saved["trainer"].__setitem__("callbacks", [{"class_path": "lightning.Trainer"}]))
    one_line_exit_2(argv, capsys, "lightning.Trainer")


@pytest.mark.parametrize("section", ["data", "trainer", "bogus"])
def test_a_yaml_bomb_is_one_line_within_a_second(tmp_path, section):
    config = tmp_path / "bomb.yaml"
    config.write_text(BOMB.replace("a: &a", f"{section}: &a", 1) if section != "bogus" else BOMB)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", "import sys; from catdog_lightning.cli import main; "
                           "sys.exit(main(['--config', sys.argv[1]]))", str(config)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "billion laughs" in done.stderr and str(config) in done.stderr
    assert time.monotonic() - start < 30  # the interpreter's start and imports; the refusal itself is instant


def test_a_yaml_bomb_in_config_yaml_is_refused_on_resume(stopped_run, capsys):
    config_file, argv = stopped_run
    config_file.write_text(BOMB)
    one_line_exit_2(argv, capsys, str(config_file), "billion laughs")


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("data", "batch_size", "abc", "data.batch_size: expected a whole number, got abc"),
        ("model", "lr", "x", "model.lr: expected a number, got x"),
        (None, "seed_everything", "abc", "seed_everything: expected a whole number, got abc"),
        ("model.net.init_args", "hidden_dims", [8, 4], "model.net.init_args.hidden_dims is [8, 4] there but [16, 8]"),
        ("data", "image_size", 24, "data.image_size is 24 there but 16"),
        (
            "model",
            "net",
            {"class_path": "catdog_lightning.models.SmallCNN"},
            "model.net.class_path is 'catdog_lightning.models.cnn.SmallCNN' there but 'catdog_lightning.models.mlp.MLP",
        ),
        ("data", "normalize", True, "data.normalize is True there"),
        ("data", "split_seed", 7, "data.split_seed is 7 there but 42"),
        (None, "logs_dir", "elsewhere", "logs_dir is not a setting a run records"),
    ],
)
def test_an_edited_config_yaml_is_checked_like_flags(stopped_run, capsys, section, key, value, expected):
    config_file, argv = stopped_run

    def change(saved: dict) -> None:
        for part in section.split(".") if section else []:
            saved = saved[part]
        saved[key] = value

    edit(config_file, change)
    one_line_exit_2(argv, capsys, str(config_file), expected)


def test_the_same_changes_as_flags_are_refused_too(stopped_run, capsys):
    _, argv = stopped_run
    one_line_exit_2([*argv, "--data.split_seed", "7"], capsys, "--data.split_seed 7 differs from the run")


def test_an_unedited_config_yaml_resumes(stopped_run, tiny_config):
    _, argv = stopped_run
    assert main(argv) == 0


def test_train_script_refuses_code_in_a_resumed_run_as_a_real_process(stopped_run, tiny_config, tmp_path):
    config_file, _ = stopped_run
    mark = tmp_path / "ran"
    spec = [{"class_path": "os.system", "init_args": {"command": f"touch {mark}"}}]
    edit(config_file, lambda saved: saved["trainer"].__setitem__("callbacks", spec))
    done = subprocess.run(train_script(tiny_config, "--ckpt_path", "last", "--trainer.max_epochs", "2"),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert not mark.exists()


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A module whose import would leave a mark; returns the mark's path (it must never appear)."""
    mark = tmp_path / "ran"
    (tmp_path / "evil_module.py").write_text(EVIL_MODULE.format(mark=str(mark)))
    monkeypatch.syspath_prepend(str(tmp_path))
    return mark


@pytest.mark.parametrize(
    ("flag", "settings", "where"),
    [
        ("--trainer", {"callbacks": [{"class_path": "evil_module.Sneaky"}]}, "trainer.callbacks[0]"),
        ("--trainer", {"logger": {"class_path": "evil_module.Sneaky"}}, "trainer.logger"),
        ("--model", {"lr": {"class_path": "evil_module.Sneaky"}}, "model.lr"),
        ("--data", {"data_dir": {"class_path": "evil_module.Sneaky"}}, "data.data_dir"),
    ],
)
def test_a_group_given_as_a_file_goes_through_the_same_gate(tmp_path, evil, capsys, flag, settings, where):
    group_file = tmp_path / "group.yaml"
    group_file.write_text(yaml.safe_dump(settings))
    for argv in ([flag, str(group_file)], [f"{flag}={group_file}"]):
        one_line_exit_2(argv, capsys, str(group_file), where, "nothing was imported or run")
    assert not evil.exists()


def test_a_settings_file_names_no_other_file(tmp_path, evil, stopped_run, capsys):
    inner = tmp_path / "inner.yaml"
    inner.write_text(yaml.safe_dump({"callbacks": [{"class_path": "evil_module.Sneaky"}]}))
    outer = tmp_path / "outer.yaml"
    outer.write_text(yaml.safe_dump({"trainer": str(inner)}))
    one_line_exit_2(["--config", str(outer)], capsys, str(outer), "trainer must hold its settings")
    config_file, argv = stopped_run
    edit(config_file, lambda saved: saved.__setitem__("trainer", str(inner)))
    one_line_exit_2(argv, capsys, str(config_file), "trainer must hold its settings")
    assert not evil.exists()


def test_a_yaml_bomb_as_a_group_file_is_one_line(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    start = time.monotonic()
    one_line_exit_2(["--trainer", str(bomb)], capsys, "billion laughs", str(bomb))
    assert time.monotonic() - start < 5


def test_a_search_file_imports_nothing_and_allows_nothing(tmp_path, evil, tiny_config, capsys):
    pytest.importorskip("optuna")
    from catdog_lightning.cli import sweep_main

    search = tmp_path / "search.yaml"
    flags = ["--data.data_dir", tiny_config["data"]["data_dir"], "--logs_dir", str(tmp_path / "logs")]
    cases = [
        ({"parameters": {"trainer.callbacks": [[{"class_path": "evil_module.Sneaky"}]]}}, "evil_module.Sneaky"),
        ({"parameters": {"allow_modules": [["evil_module"]]}}, "allow_modules is not searched"),
        ({"parameters": {"trainer": ["other.yaml"]}}, "trainer is not searched"),
    ]
    for spec, says in cases:
        search.write_text(yaml.safe_dump(spec))
        assert sweep_main(["--search", str(search), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err
    assert not evil.exists()


@pytest.mark.parametrize("save_dir", ["/tmp/elsewhere", "../../..", "."])
def test_a_run_folders_settings_never_move_its_logs_elsewhere(stopped_run, tmp_path, capsys, save_dir):
    config_file, argv = stopped_run
    spec = {"class_path": "CSVLogger", "init_args": {"save_dir": save_dir}}
    edit(config_file, lambda saved: saved["trainer"].__setitem__("logger", spec))
    one_line_exit_2(argv, capsys, "an extra logger writes in a folder of its own inside the run")
    assert not Path("/tmp/elsewhere").exists()


def test_a_symlinked_folder_inside_a_run_is_refused(stopped_run, tmp_path, capsys):
    config_file, argv = stopped_run
    run = config_file.parent
    target = tmp_path / "target"
    (run / "checkpoints").rename(target)
    (run / "checkpoints").symlink_to(target)
    before = (target / "last.ckpt").read_bytes()
    one_line_exit_2(argv, capsys, "a symbolic link inside a run folder")
    assert (target / "last.ckpt").read_bytes() == before


def test_a_cache_dir_in_config_yaml_is_not_followed(stopped_run, tmp_path):
    config_file, argv = stopped_run
    elsewhere = tmp_path / "planted-cache"
    edit(config_file, lambda saved: saved["data"].__setitem__("cache_dir", str(elsewhere)))
    assert main(argv) == 0
    assert not elsewhere.exists()


def test_a_class_outside_callbacks_and_loggers_is_one_line(stopped_run, capsys):
    config_file, argv = stopped_run
    spec = {"class_path": "lightning.pytorch.profilers.SimpleProfiler"}
    edit(config_file, lambda saved: saved["trainer"].__setitem__("profiler", spec))
    one_line_exit_2(argv, capsys, str(config_file), "trainer.profiler names a class", "--trainer.profiler simple")


def test_a_checkpoint_callback_of_ones_own_is_one_line(tiny_config, capsys):
    flags = ["--data.data_dir", tiny_config["data"]["data_dir"], "--logs_dir", tiny_config["logs_dir"],
             "--trainer.callbacks", "ModelCheckpoint", "--trainer.max_epochs", "1"]  # fmt: skip
    one_line_exit_2(flags, capsys, "a run keeps its own checkpoints", "--best_by")
