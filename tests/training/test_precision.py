"""bf16 mixed precision, the CNN recipes' default: it trains in bf16, resumes exactly, and says when it is slow."""

from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import ROOT, assert_same, stopped_mid_epoch_then_resumed

from catdog_lightning import cli
from catdog_lightning.storage.checkpoints import read_checkpoint
from catdog_lightning.training import train
from catdog_lightning.training.resume import merge
from catdog_lightning.training.trainer import cpu_has_fast_bf16, precision_note

FAST = str(ROOT / "configs" / "cnn-fast.yaml")


@pytest.fixture
def bf16_cnn(tiny_config):
    """The fast recipe, shrunk to tiny data: 16 px, two narrow blocks, 3 epochs of 5 steps."""
    recipe = cli.parse_flags(["--config", FAST])
    small = {
        "data": {**recipe["data"], **tiny_config["data"], "val_fraction": 0.1},
        "model": {**recipe["model"], "channels": [4, 8]},
        "trainer": {**tiny_config["trainer"], **recipe["trainer"], "max_epochs": 3, "deterministic": True},
        "test_checkpoint": recipe["test_checkpoint"],
    }
    return merge(tiny_config, small)


def test_a_bf16_run_computes_its_convolutions_in_bf16(bf16_cnn):
    seen = set()

    class ConvDtype(L.Callback):
        """The first convolution's output dtype during training steps (pictures for TensorBoard are fp32)."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            conv = next(m for m in pl_module.modules() if isinstance(m, torch.nn.Conv2d))
            self.hook = conv.register_forward_hook(lambda module, args, out: seen.add(out.dtype))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.hook.remove()

    metrics = train(bf16_cnn, callbacks=[ConvDtype()])
    assert seen == {torch.bfloat16}
    assert metrics["epochs_trained"] == 3 and 0.0 <= metrics["test/acc"] <= 1.0
    state = read_checkpoint(Path(metrics["run_dir"]) / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(t.dtype != torch.bfloat16 for t in state.values())  # the weights stay fp32; only arithmetic is bf16


def test_a_bf16_run_stopped_mid_epoch_resumes_to_identical_weights(bf16_cnn, tmp_path):
    straight, resumed, stopped_at = stopped_mid_epoch_then_resumed(bf16_cnn, tmp_path)
    assert stopped_at == 5 + 3
    assert_same(straight, resumed)
    assert resumed[0]["global_step"] == 3 * 5


@pytest.mark.parametrize(
    ("flags", "fast"),
    [("fpu avx2 avx512f avx512_bf16", True), ("fpu sse avx2 fma", False), ("fp asimd bf16", True)],
)
def test_bf16_on_a_cpu_that_emulates_it_gets_one_line(tmp_path, flags, fast):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n" if "asimd" not in flags else f"Features\t: {flags}\n")
    assert cpu_has_fast_bf16(str(cpuinfo)) is fast
    bf16 = L.Trainer(precision="bf16-mixed", accelerator="cpu", logger=False, enable_checkpointing=False)
    note = precision_note(bf16, str(cpuinfo))
    assert (note is None) == fast
    if note:
        assert "emulated" in note and "--trainer.precision 32-true" in note and "\n" not in note
    fp32 = L.Trainer(precision="32-true", accelerator="cpu", logger=False, enable_checkpointing=False)
    assert precision_note(fp32, str(cpuinfo)) is None
    assert cpu_has_fast_bf16(str(tmp_path / "absent")) is None  # not Linux: no guess, no note


def test_the_cnn_keeps_channels_last_from_input_to_head_in_bf16():
    """oneDNN/cuDNN run NHWC convolutions without layout shuffles (1.45x the images/s of NCHW in bf16 here)."""
    from catdog_lightning.models.cnn import SmallCNN

    net = SmallCNN((4, 8), convs_per_block=2)
    layouts = []
    for module in net.features:
        module.register_forward_hook(
            lambda m, args, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last))
        )
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in net.parameters() if p.dim() == 4)
    with torch.autocast("cpu", torch.bfloat16):
        logits = net(torch.rand(2, 3, 16, 16))  # a plain NCHW batch, as the DataLoader and augmentation give it
    logits.float().sum().backward()
    assert logits.shape == (2,) and len(layouts) == len(net.features) and all(layouts)
