"""Nothing lost, part two: copied run folders, hostile or damaged checkpoints, settings that name other places,
decode workers that outlive their run, file names that are not plain text, files that claim to be photos."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, assert_same, fit_weights, make_tiny_config, net_spec, train_script, write_image

from catdog_lightning.cli import evaluate_main, main, predict_main
from catdog_lightning.data.decode import decode_many
from catdog_lightning.storage.atomic import atomic_write_text, remove_stale_temporaries
from catdog_lightning.training import train
from catdog_lightning.training.fit import _is_write_failure
from catdog_lightning.training.resume import merge
from lab.stress import SLOW_DECODE, running


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lost")
    config = make_tiny_config(tiny_dataset, tmp)
    metrics = train(merge(config, {"trainer": {"max_epochs": 1}}))
    return Path(metrics["best_checkpoint"]), config


def one_line_exit_2(code: int, capsys, *expected: str) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def test_a_copied_run_resumes_with_its_real_best(tiny_config, tmp_path):
    config = merge(tiny_config, {"trainer": {"deterministic": True, "max_epochs": 3},
                                 "model": {"net": net_spec(dropout=0.2)}, "data": {"augment": True},
                                 "run_name": "r"})  # fmt: skip
    train(merge(config, {"logs_dir": str(tmp_path / "a")}))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    further = {"ckpt_path": "last", "run_name": "r", "trainer": {"max_epochs": 6}}
    original = fit_weights(merge(further, {"logs_dir": str(tmp_path / "a")}))
    copy = fit_weights(merge(further, {"logs_dir": str(tmp_path / "b")}))
    assert_same(original, copy)
    best = [torch.load(tmp_path / d / "r" / "checkpoints" / "best.ckpt", weights_only=True) for d in "ab"]
    assert best[0]["epoch"] == best[1]["epoch"]
    assert all(torch.equal(best[0]["state_dict"][k], best[1]["state_dict"][k]) for k in best[0]["state_dict"])


def hostile(ckpt: Path, tmp_path: Path, kind: str) -> Path:
    saved = torch.load(ckpt, weights_only=True)
    if kind in ("callbacks", "loops"):
        saved[kind] = "garbage"
    elif kind == "optimizer_states":
        saved[kind] = [{"state": "garbage"}]
    elif kind.startswith("epoch"):
        value = kind.split("=")[1]
        if value == "missing":
            saved.pop("epoch")
        else:
            saved["epoch"] = None if value == "None" else value
    elif kind in ("optimizer", "scheduler"):
        saved["hyper_parameters"][kind] = "no_such_one"
    elif kind == "image_size":
        saved["datamodule_hyper_parameters"]["image_size"] = 24
    elif kind == "std0":
        saved["state_dict"]["standardize.std"] = torch.zeros(3)
    path = tmp_path / f"{kind.replace('=', '_')}.ckpt"
    torch.save(saved, path)
    return path


@pytest.mark.parametrize(
    "kind",
    [
        "callbacks",
        "loops",
        "optimizer_states",
        "epoch=abc",
        "epoch=None",
        "epoch=missing",
        "optimizer",
        "scheduler",
        "image_size",
    ],  # fmt: skip
)
def test_a_hostile_checkpoint_is_one_line_on_resume(trained, tmp_path, kind, capsys):
    ckpt, config = trained
    path = hostile(ckpt, tmp_path, kind)
    argv = train_script(config, "--ckpt_path", str(path), "--logs_dir", str(tmp_path / "logs"))[2:]
    one_line_exit_2(main(argv), capsys, str(path))


@pytest.mark.parametrize("kind", ["image_size", "std0", "optimizer"])
def test_a_hostile_checkpoint_is_one_line_for_evaluate_test_and_predict(trained, tmp_path, kind, capsys):
    ckpt, config = trained
    path = hostile(ckpt, tmp_path, kind)
    one_line_exit_2(evaluate_main(["--ckpt_path", str(path), "--report", str(tmp_path / "r.json")]), capsys)
    one_line_exit_2(main(["test", "--ckpt_path", str(path), "--trainer.accelerator", "cpu"]), capsys)
    if kind != "image_size":  # predict.py reads the model's own size, not the data settings
        one_line_exit_2(predict_main(["--ckpt_path", str(path), config["data"]["data_dir"]]), capsys)


def test_a_checkpoint_s_cache_dir_is_not_followed(trained, tmp_path, capsys):
    ckpt, _ = trained
    saved = torch.load(ckpt, weights_only=True)
    elsewhere = tmp_path / "somewhere" / "else"
    saved["datamodule_hyper_parameters"]["cache_dir"] = str(elsewhere)
    torch.save(saved, tmp_path / "elsewhere.ckpt")
    assert evaluate_main(["--ckpt_path", str(tmp_path / "elsewhere.ckpt"), "--report", str(tmp_path / "r.json")]) == 0
    assert not (tmp_path / "somewhere").exists()


def test_built_in_pictures_a_checkpoint_names_are_never_drawn_here(trained, tmp_path, monkeypatch, capsys):
    ckpt, _ = trained
    saved = torch.load(ckpt, weights_only=True)
    saved["datamodule_hyper_parameters"]["data_dir"] = None
    torch.save(saved, tmp_path / "builtin.ckpt")
    monkeypatch.chdir(tmp_path)
    code = evaluate_main(["--ckpt_path", str(tmp_path / "builtin.ckpt"), "--report", str(tmp_path / "r.json")])
    one_line_exit_2(code, capsys, "built-in pictures", "--data.data_dir")
    assert not (tmp_path / "data").exists()


def test_evaluate_in_a_read_only_run_folder_is_one_line(trained, monkeypatch, capsys):
    import errno

    import catdog_lightning.inference.evaluation as evaluation

    def read_only(path, text):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(evaluation, "atomic_write_text", read_only)
    one_line_exit_2(evaluate_main(["--ckpt_path", str(trained[0])]), capsys, "could not be saved", "--report")


def test_a_disk_full_inside_torch_s_writer_is_a_write_failure():
    assert _is_write_failure(RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1216 vs 1140"))
    assert not _is_write_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_decode_workers_die_with_their_run_and_free_its_output(tiny_dataset):
    paths = [str(p) for p in sorted(tiny_dataset.rglob("*.jpg"))] * 20  # ~1,100 files, 50 ms each
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DECODE, *paths], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "decoding"
    time.sleep(2)
    workers = [int(c) for t in Path(f"/proc/{proc.pid}/task").iterdir() for c in (t / "children").read_text().split()]
    assert len(workers) == 2
    proc.kill()
    proc.wait()
    started = time.monotonic()
    assert proc.stdout.read() == ""  # end of file: no worker holds the run's stdout open
    while any(running(w) for w in workers):
        assert time.monotonic() - started < 10, "decode workers outlived their run"
        time.sleep(0.1)


def test_parallel_decoding_still_matches_serial(tiny_dataset):
    paths = [str(p) for p in sorted(tiny_dataset.rglob("*.jpg"))]
    serial, kept_serial, _ = decode_many(paths, 16, workers=1)
    parallel, kept_parallel, _ = decode_many(paths, 16, workers=2)
    assert kept_serial == kept_parallel and (serial == parallel).all()


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"


def test_a_postscript_file_named_jpg_is_skipped_and_ghostscript_never_runs(tmp_path, monkeypatch, capsys):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    marker = tmp_path / "gs-ran"
    (fake_bin / "gs").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (fake_bin / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.eps.jpg").write_bytes(EPS)
    write_image(tmp_path / "photos" / "dog.jpg")
    _, _, failures = decode_many([str(tmp_path / "photos" / "cat.eps.jpg")], 16, workers=1)
    assert len(failures) == 1 and not marker.exists()


@pytest.mark.parametrize(
    "name", ["bad\udcffname.jpg", "new\nline.jpg", "\x1b[31mred.jpg"], ids=["not-utf8", "newline", "ansi"]
)
def test_odd_file_names_are_printed_escaped_on_one_line(trained, tmp_path, name):
    ckpt, _ = trained
    folder = tmp_path / "odd"
    folder.mkdir()
    raw = os.fsencode(str(folder)) + b"/" + os.fsencode(name)
    write_image(tmp_path / "plain.jpg")
    shutil.copy(tmp_path / "plain.jpg", raw)
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "predict.py"), str(folder), "--ckpt_path", str(ckpt)],
        capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1 and "\x1b" not in lines[0] and lines[0].split("\t")[2] in ("cat", "dog")


def test_run_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "metrics.json", json.dumps({}))
    finally:
        os.umask(old)
    # the mask is read when the module is imported: the project's default umask applies to its files
    from catdog_lightning.storage import atomic

    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~atomic._UMASK


def test_a_temporary_whose_writer_is_gone_is_removed_at_once(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".decoded-x.pt.{pid}.abcd1234.catdog-tmp"
    live = tmp_path / f".decoded-y.pt.{os.getpid()}.abcd1234.catdog-tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    removed = remove_stale_temporaries(tmp_path, older_than_s=3600, names=("decoded-",))
    assert removed == [stale] and live.exists()


@pytest.mark.parametrize("name", ["new\nline", "-flag", "with space", ".hidden"])
def test_run_names_are_plain_names(tiny_config, name):
    from catdog_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match="--run_name"):
        train(merge(tiny_config, {"run_name": name}))


def test_a_data_dir_that_is_a_file_says_so(tmp_path, capsys):
    (tmp_path / "photos.zip").write_bytes(b"PK")
    one_line_exit_2(main(["--data.data_dir", str(tmp_path / "photos.zip")]), capsys, "is a file")
