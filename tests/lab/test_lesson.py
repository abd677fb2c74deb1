"""The lesson's PyTorch program, kept as the baseline of docs/RESULTS.md."""

import json

import torch
from torch.utils.data import DataLoader

from catdog_lightning.data.scan import scan_labelled_folder
from catdog_lightning.models import MLP
from lab.cli import lesson_main
from lab.lesson import LessonDataset, decoded_once, fit_epochs


def test_decoding_once_trains_bit_for_bit_like_decoding_every_epoch(tiny_dataset):
    files = scan_labelled_folder(tiny_dataset / "train").files

    def weights_after_two_epochs(dataset):
        torch.manual_seed(11)
        net = MLP(16, [8, 4])
        loader = DataLoader(dataset, batch_size=8, shuffle=True)
        fit_epochs(net, lambda: loader, epochs=2)
        return net.state_dict()

    as_written = weights_after_two_epochs(LessonDataset(files, 16))
    once = weights_after_two_epochs(decoded_once(LessonDataset(files, 16)))
    assert as_written.keys() == once.keys()
    assert all(torch.equal(as_written[k], once[k]) for k in as_written)
    torch.manual_seed(11)  # and training moved the weights, so equal weights mean equal training
    initial = MLP(16, [8, 4]).state_dict()
    assert not any(torch.equal(initial[k], once[k]) for k in once)


def test_lesson_script_writes_its_metrics(tiny_dataset, tmp_path, capsys):
    argv = ["--data_dir", str(tiny_dataset), "--epochs", "2", "--seed", "1", "--logs_dir", str(tmp_path)]
    assert lesson_main([*argv, "--decode_once", "true"]) == 0
    assert "test " in capsys.readouterr().out
    metrics = json.loads((tmp_path / "lesson_0" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["decode_once"] is True and 0 <= metrics["test/acc"] <= 1
    assert metrics["train_seconds"] > 0


def test_lesson_script_bad_flags_are_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "only" / "train").mkdir(parents=True)
    for argv, message in [
        (["--epochs", "0", "--data_dir", str(tmp_path)], "--epochs must be at least 1"),
        (["--data_dir", str(tmp_path / "only")], "has no test/ folder"),
    ]:
        assert lesson_main([*argv, "--logs_dir", str(tmp_path / "logs")]) == 2
        assert message in capsys.readouterr().err
