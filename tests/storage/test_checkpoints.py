"""Reading a checkpoint: a run's epoch or classes are looked up without copying every weight into memory."""

import os
from pathlib import Path

import pytest
import torch

from catdog_lightning.storage.checkpoints import read_checkpoint


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads this process's memory from /proc (Linux)")
def test_looking_up_a_checkpoint_s_epoch_does_not_load_its_weights(tmp_path):
    """A resume and the end of every run look at a checkpoint several times (its epoch, its classes): each look
    maps the file, so a big model is not copied into memory for each."""
    path = tmp_path / "big.ckpt"
    weights = {"net.weight": torch.ones(16 * 2**20)}  # 64 MiB of float32
    torch.save({"epoch": 4, "state_dict": weights, "hyper_parameters": {"class_names": ["a", "b"]}}, path)
    del weights
    before = resident_bytes()
    saved = read_checkpoint(path)
    assert saved["epoch"] == 4 and saved["hyper_parameters"]["class_names"] == ["a", "b"]
    assert resident_bytes() - before < 16 * 2**20
    assert float(saved["state_dict"]["net.weight"][-1]) == 1.0  # the weights are there, read when used
