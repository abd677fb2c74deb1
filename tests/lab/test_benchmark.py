"""scripts/benchmark.py: the arithmetic of its table, and one real run on tiny data."""

import json
import subprocess
import sys

import pytest
from helpers import ROOT, net_spec


def test_benchmark_summary_and_table_from_measurements():
    from lab.benchmark.tables import format_table, summarise

    measured = {
        "data_dir": "photos",
        "epochs": 3,
        "cache_build": {"seconds": 2.0, "images": 100, "tensor_mb": 1.2},
        "lesson": {"epoch_s": [10.0, 12.0, 11.0], "images": 100, "peak_rss_mb": 500},
        "project_cold": {"epoch_s": [5.0, 1.0, 1.2], "first_step_s": 4.0, "peak_rss_mb": 600},
        "project_warm": {"epoch_s": [1.1, 1.0, 1.4], "first_step_s": 0.5, "peak_rss_mb": 550},
        "floor": {"epoch_s": [0.9, 0.8, 1.0], "images": 90, "peak_rss_mb": 520},
    }
    r = summarise(measured)
    steady = 1.1  # median of the project's epochs after the first, both runs: 1.0, 1.2, 1.0, 1.4
    assert r["project_steady_epoch_s"] == pytest.approx(steady)
    assert r["ratios"]["lesson_over_project"] == pytest.approx((11.0 / 100) / (steady / 90))
    assert r["ratios"]["project_over_floor"] == pytest.approx(steady / 0.9)
    assert r["ratios"]["lesson_epoch_over_cache_build"] == pytest.approx(11.0 / 2.0)
    assert r["ratios"]["warm_over_cold_first_step"] == pytest.approx(0.125)
    table = format_table(r)
    assert "| 1. lesson as written" in table and "ratio 2/3" in table and "600 MB vs 1025 MB" in table


@pytest.mark.slow
def test_benchmark_script_runs_end_to_end_on_tiny_data(tiny_dataset, tmp_path):
    script = ROOT / "scripts" / "benchmark.py"
    out = subprocess.run(
        [sys.executable, str(script), "--data_dir", str(tiny_dataset), "--epochs", "2", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["lesson"]["images"] == 40 and result["floor"]["images"] == 36
    assert all(v > 0 for v in result["ratios"].values())


def test_cnn_and_thread_rows_compare_medians_after_the_first_epoch():
    from lab.benchmark.tables import format_table, summarise

    def runs(project, floor):
        return {
            "project": {"epoch_s": project, "peak_rss_mb": 900},
            "floor": {"epoch_s": floor, "images": 100, "image_size": 96, "peak_rss_mb": 800},
        }

    measured = {
        "data_dir": "photos",
        "epochs": 3,
        "accelerator": "cpu",
        "cnn": {
            "32-true": runs([9.0, 4.0, 5.0], [9.0, 4.0, 4.0]),
            "bf16-mixed": runs([9.0, 2.0, 3.0], [5.0, 2.0, 2.0]),
        },
        "threads": [
            {"threads": 2, "workers": 0, "project": {"epoch_s": [9.0, 2.0, 3.0], "peak_rss_mb": 900}},
            {"threads": 1, "workers": 0, "project": {"epoch_s": [9.0, 5.0, 5.0], "peak_rss_mb": 900}},
        ],
    }
    r = summarise(measured)
    fp32, bf16 = r["cnn"]["32-true"]["summary"], r["cnn"]["bf16-mixed"]["summary"]
    assert fp32["project_epoch_s"] == 4.5 and fp32["floor_epoch_s"] == 4.0 and fp32["project_over_floor"] == 1.125
    assert bf16["images_per_s"] == 40.0 and r["cnn_bf16_speedup"] == 1.8
    assert [s["epoch_s"] for s in r["threads"]] == [2.5, 5.0]
    table = format_table(r)
    assert (
        "100 train images at 96 px" in table
        and "| bf16-mixed | 2.50" in table
        and "1.80x faster" in table
        and "| 1                | 0" in table
    )
    assert "lesson" not in table  # the MLP part was not asked for


def test_cnn_bare_loop_runs_the_recipe_in_bf16(tiny_dataset, tmp_path):
    from lab.benchmark.phases import phase_cnn_floor

    result = phase_cnn_floor(str(tiny_dataset), 2, str(tmp_path / "cache"), precision="bf16-mixed")
    assert (
        result["images"] == 38 and len(result["epoch_s"]) == 2 and result["image_size"] == 64
    )  # the recipe keeps 5% (2 of 40) for validation


def test_benchmark_refuses_unknown_parts_and_accelerators(capsys):
    from lab.cli import benchmark_main

    assert benchmark_main(["--parts", "[mlp,gpus]"]) == 2
    assert benchmark_main(["--accelerator", "tpu"]) == 2
    err = capsys.readouterr().err
    assert "--parts takes some of mlp, cnn, threads, backbones, shards, inference; gpus is not one." in err
    assert "--accelerator must be cpu" in err


def test_the_inference_table_times_every_backend_side_by_side_and_scores_them(tiny_config):
    pytest.importorskip("onnxruntime")
    from catdog_lightning.hardware import fast_bf16
    from catdog_lightning.training import train
    from catdog_lightning.training.resume import merge
    from lab.benchmark.inference import format_inference, run_inference_benchmark

    overrides = {
        "trainer": {"max_epochs": 2},
        "data": {"image_size": 32},
        "model": {"net": net_spec("cnn", channels=[8, 16])},
    }
    ckpt = train(merge(tiny_config, overrides))["best_checkpoint"]
    result = run_inference_benchmark(ckpt, rounds=1)
    settings = {r["setting"] for r in result["rows"]}
    expected = {"torch eager fp32", "torch channels_last fp32", "ONNX Runtime fp32", "ONNX Runtime INT8"}
    assert settings == expected | ({"torch channels_last bf16"} if fast_bf16("cpu") else set())
    assert {r["batch"] for r in result["rows"]} == {1, 32} and all(r["images_s"] > 0 for r in result["rows"])
    assert result["gflop_per_image"] > 0 and result["rooflines"]["fp32"] > 0
    assert result["agreement"]["torch eager fp32"] == 1.0 and result["agreement"]["ONNX Runtime fp32"] == 1.0
    table = format_inference(result)
    assert "ONNX Runtime INT8" in table and "roofline" in table and "agreement" in table
