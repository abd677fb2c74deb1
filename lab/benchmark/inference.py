"""Inference side by side in one process: a trained checkpoint's images/s in torch eager fp32, channels_last,
bf16 autocast (where this machine computes bf16 natively), ONNX Runtime fp32 and INT8, at batch 1 and 32; the
GFLOP/s each achieves against a matmul roofline measured here; and the INT8 copy's accuracy and label agreement
against fp32 on the run's own test split.

Rounds are interleaved (every setting once per round, the median of the rounds reported), so a machine that
slows down mid-run slows every setting alike. It reports; it does not assert.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from catdog_lightning.hardware import fast_bf16
from catdog_lightning.inference.export import ProbabilityModel, export_model
from catdog_lightning.inference.onnx_runtime import session
from catdog_lightning.models.loading import load_model
from catdog_lightning.storage.checkpoints import read_checkpoint
from catdog_lightning.training.stages import checkpoint_data

BATCHES = (1, 32)


def _median_seconds(run, rounds: int) -> float:
    return statistics.median(_timed(run) for _ in range(rounds))


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def matmul_roofline(dtype: torch.dtype, n: int = 2048, rounds: int = 5) -> float:
    """GFLOP/s of one large square matmul in ``dtype`` on this machine (torch's BLAS / oneDNN)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    return 2 * n**3 / _median_seconds(lambda: torch.mm(a, b), rounds) / 1e9


def int8_roofline(n: int = 2048, rounds: int = 5) -> float | None:
    """GOP/s of an int8 x int8 -> int32 matmul on ONNX Runtime (MatMulInteger), None where it cannot run."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        return None
    weights = np.random.randint(-127, 127, (n, n)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "mm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
        [helper.make_tensor("b", TensorProto.INT8, [n, n], weights.tobytes(), raw=True)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mm.onnx"
        onnx.save(model, str(path))
        sess = session(path)
    a = np.random.randint(0, 255, (n, n)).astype(np.uint8)
    sess.run(None, {"a": a})
    return 2 * n**3 / _median_seconds(lambda: sess.run(None, {"a": a}), rounds) / 1e9


def flops_per_image(net: torch.nn.Module, size: int) -> float:
    """Multiply-adds x 2 of one image through ``net`` (torch's FLOP counter: convolutions and matmuls)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net(torch.rand(1, 3, size, size))
    return float(counter.get_total_flops())


def settings(ckpt: str, tmp: Path) -> dict:
    """name -> (run(images float N x 3 x S x S), precision of its arithmetic)."""
    model = ProbabilityModel(load_model(ckpt).network()).eval()
    nhwc = ProbabilityModel(load_model(ckpt).network()).eval().to(memory_format=torch.channels_last)
    export_model(ckpt, "onnx", tmp / "fp32.onnx")
    export_model(ckpt, "onnx-int8", tmp / "int8.onnx")
    fp32, int8 = session(tmp / "fp32.onnx"), session(tmp / "int8.onnx")

    def torch_run(net, bf16=False, channels_last=False):
        def run(x):
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                return net(x).float()

        return run

    found = {
        "torch eager fp32": (torch_run(model), "fp32"),
        "torch channels_last fp32": (torch_run(nhwc, channels_last=True), "fp32"),
    }
    if fast_bf16("cpu"):
        found["torch channels_last bf16"] = (torch_run(nhwc, bf16=True, channels_last=True), "bf16")
    found["ONNX Runtime fp32"] = (lambda x: torch.from_numpy(fp32.run(None, {"images": x.numpy()})[0]), "fp32")
    found["ONNX Runtime INT8"] = (lambda x: torch.from_numpy(int8.run(None, {"images": x.numpy()})[0]), "int8")
    return found


def test_images(ckpt: str, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's own test split (its decode cache), as float images and labels."""
    datamodule = checkpoint_data(read_checkpoint(ckpt), {"augment": False})
    datamodule.prepare_data()
    datamodule.setup("test")
    test = datamodule.test_set
    rows = torch.arange(len(test) if count is None else min(count, len(test)))
    return test.take(rows).float() / 255, test.labels[rows]


def run_inference_benchmark(ckpt: str, rounds: int = 5) -> dict:
    images, labels = test_images(ckpt)
    size = images.shape[-1]
    with tempfile.TemporaryDirectory(prefix="catdog-bench-onnx-") as tmp:
        found = settings(ckpt, Path(tmp))
        flops = flops_per_image(load_model(ckpt).network(), size)
        # Accuracy on every test photo, batch 32: fp32 (torch eager) against each other setting.
        probs = {name: torch.cat([run(chunk) for chunk in images.split(32)]) for name, (run, _) in found.items()}
        reference = probs["torch eager fp32"] > 0.5
        accuracy = {name: float(((p > 0.5) == (labels == 1)).float().mean()) for name, p in probs.items()}
        agreement = {name: float(((p > 0.5) == reference).float().mean()) for name, p in probs.items()}
        timed = {}
        for batch in BATCHES:
            chunk = images[: max(batch, 32)] if batch > 1 else images[:8]
            pieces = list(chunk.split(batch))
            for _ in range(rounds):  # interleaved: each setting once a round
                for name, (run, _) in found.items():
                    seconds = _timed(lambda run=run, pieces=pieces: [run(piece) for piece in pieces])
                    timed.setdefault((name, batch), []).append(len(chunk) / seconds)
    roofs = {"fp32": matmul_roofline(torch.float32), "int8": int8_roofline()}
    if fast_bf16("cpu"):
        roofs["bf16"] = matmul_roofline(torch.bfloat16)
    rows = []
    for (name, batch), rates in timed.items():
        per_s = statistics.median(rates)
        precision = found[name][1]
        gflops = flops * per_s / 1e9
        roof = roofs.get(precision)
        rows.append({"setting": name, "batch": batch, "images_s": per_s, "gflop_s": gflops,
                     "roofline": roof, "share": gflops / roof if roof else None})  # fmt: skip
    return {"ckpt": ckpt, "images": len(labels), "gflop_per_image": flops / 1e9, "rooflines": roofs,
            "rows": rows, "accuracy": accuracy, "agreement": agreement}  # fmt: skip


def format_inference(result: dict) -> str:
    base = {r["batch"]: r["images_s"] for r in result["rows"] if r["setting"] == "torch eager fp32"}
    head = f"{'setting':<26} {'batch':>5} {'images/s':>9} {'vs eager':>8} {'GFLOP/s':>8} {'roofline':>9} {'share':>6}"
    lines = [
        f"Inference of {result['ckpt']} ({result['gflop_per_image']:.2f} GFLOP an image; medians of "
        "interleaved rounds)",
        head,
        "-" * len(head),
    ]
    for r in result["rows"]:
        roof = f"{r['roofline']:.0f}" if r["roofline"] else "-"
        share = f"{100 * r['share']:.0f}%" if r["share"] else "-"
        lines.append(
            f"{r['setting']:<26} {r['batch']:>5} {r['images_s']:>9.1f} {r['images_s'] / base[r['batch']]:>7.2f}x "
            f"{r['gflop_s']:>8.1f} {roof:>9} {share:>6}"
        )
    roofs = ", ".join(f"{k} {v:.0f}" for k, v in result["rooflines"].items() if v)
    lines += [
        f"matmul rooflines measured here (2048x2048, GFLOP/s or GOP/s): {roofs}",
        "",
        f"On the run's test split ({result['images']} photos): accuracy, and labels agreeing with torch fp32",
    ]
    for name, acc in result["accuracy"].items():
        lines.append(f"  {name:<26} accuracy {100 * acc:6.2f}%   agreement {100 * result['agreement'][name]:6.2f}%")
    return "\n".join(lines)
