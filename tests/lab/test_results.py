"""scripts/results.py: runs measured in fresh processes, stored, and turned into docs/RESULTS.md."""

import json

import pytest
from helpers import net_spec

from catdog_lightning.errors import UserError
from lab.cli import results_main
from lab.plot import plot
from lab.results import measure, render
from lab.rows import ROWS, ROWS_BY_KEY, Row


def test_measure_runs_the_command_and_reads_its_metrics_back(tiny_dataset, tmp_path):
    row = Row(
        "tiny",
        "Tiny MLP",
        "train.py",
        ("--data.image_size", "16", "--model.net.init_args.hidden_dims", "[8]", "--trainer.max_epochs", "1"),
        "--seed_everything",
        extra=("--data.cache_dir", str(tmp_path / "cache"), "--trainer.enable_progress_bar", "false"),
    )
    record = measure(row, 3, str(tiny_dataset), tmp_path / "logs")
    metrics = json.loads((tmp_path / "logs" / "tiny-seed3" / "metrics.json").read_text())
    assert record["test_acc"] == pytest.approx(metrics["test/acc"]) and record["epochs"] == 1
    assert record["wall_s"] > record["train_s"] > 0
    assert record["command"] == row.signature() and "--seed_everything S" in row.signature()
    saved = (tmp_path / "logs" / "tiny-seed3" / "config.yaml").read_text()
    assert "seed_everything: 3" in saved
    assert "\nResults\n  tested" in (tmp_path / "logs" / "tiny-seed3.log").read_text()
    again = measure(row, 3, str(tiny_dataset), tmp_path / "logs")  # a stored run is replaced, not refused
    assert again["test_acc"] == record["test_acc"]


def test_a_failing_run_is_one_line_naming_its_log(tiny_dataset, tmp_path):
    row = Row("broken", "Broken", "train.py", ("--model.lr", "-1"), "--seed_everything")
    with pytest.raises(
        UserError, match=r"broken seed 0 exited with 2: error: --model.lr must be positive.*broken-seed0"
    ):
        measure(row, 0, str(tiny_dataset), tmp_path / "logs")


def test_render_reports_mean_spread_and_drops_stale_runs():
    row = ROWS_BY_KEY["mlp"]
    current = row.signature()

    def run(acc, command=current):
        return {"test_acc": acc, "wall_s": 60.0, "train_s": 50.0, "epochs": 20, "command": command}

    store = {"runs": {"mlp": {"0": run(0.60), "1": run(0.62), "2": run(0.64), "3": run(0.99, "an older command")}}}
    table = render(store)
    (line,) = [x for x in table.splitlines() if x.startswith(f"| {row.title}")]
    assert "**62.0%** ± 2.0" in line and "60.0–64.0%" in line and "| 0, 1, 2 |" in line
    assert "| 1.0 min | 0.8 min |" in line  # wall time and training time
    assert "--seed_everything S" in line
    assert not any(x.startswith(f"| {r.title}") for r in ROWS if r.key != "mlp" for x in table.splitlines())


def test_the_footer_names_the_machine_each_row_was_measured_on():
    def run(row, cpu, date=None):
        machine = {"cpu": cpu, "torch": "2.x", "python": "3.11"}
        return {"test_acc": 0.9, "wall_s": 6.0, "train_s": 5.0, "epochs": 1, "command": row.signature(),
                "machine": machine, **({"date": date} if date else {})}  # fmt: skip

    mlp, cnn, probe = ROWS_BY_KEY["mlp"], ROWS_BY_KEY["cnn"], ROWS_BY_KEY["probe"]
    new = {"0": run(probe, "New CPU", "2026-12-04"), "1": run(probe, "New CPU", "2026-12-05")}
    store = {"runs": {"mlp": {"0": run(mlp, "Old CPU")}, "cnn": {"0": run(cnn, "Old CPU")}, "probe": new}}
    footer = next(line for line in render(store).splitlines() if line.startswith("Measured"))
    assert footer.startswith(
        f"Measured one run at a time, no GPU, on New CPU, torch 2.x, Python 3.11: {probe.title} (2026-12-04 to "
        "2026-12-05); on Old CPU, torch 2.x, Python 3.11: the other rows."
    )
    store["runs"] = {"mlp": store["runs"]["mlp"]}
    footer = next(line for line in render(store).splitlines() if line.startswith("Measured"))
    assert "on Old CPU, torch 2.x, Python 3.11: every row." in footer


def test_bad_flags_are_one_line_exit_2(tmp_path, capsys):
    assert results_main(["--data_dir", str(tmp_path), "--rows", "[nope]", "--store", str(tmp_path / "s.json")]) == 2
    assert "--rows nope: unknown" in capsys.readouterr().err
    assert results_main(["--data_dir", str(tmp_path), "--store", str(tmp_path / "s.json")]) == 2
    assert "needs train/ and test/" in capsys.readouterr().err


def test_plot_puts_each_row_at_its_time_and_accuracy():
    def run(key, acc, seconds):
        row = ROWS_BY_KEY[key]
        return {"test_acc": acc, "wall_s": seconds, "train_s": seconds, "epochs": 1, "command": row.signature()}

    store = {"runs": {"mlp": {"0": run("mlp", 0.6, 30)}, "probe": {"0": run("probe", 0.98, 40)}}}
    img = plot(store)
    pixels = img.load()
    colours = {pixels[x, y] for x in range(img.width) for y in range(img.height)}
    assert (200, 80, 30) in colours and (30, 90, 200) in colours  # a from-scratch and a pretrained point
    # The pretrained point sits higher (better accuracy) than the MLP's, at a similar time.
    rows_of = {c: [y for x in range(img.width // 2) for y in range(img.height) if pixels[x, y] == c] for c in colours}
    assert min(rows_of[(30, 90, 200)]) < min(rows_of[(200, 80, 30)])


def test_a_stored_run_of_a_config_row_is_stale_once_the_file_holds_another_recipe(tmp_path, monkeypatch):
    from lab import rows

    (tmp_path / "configs").mkdir()
    recipe = tmp_path / "configs" / "r.yaml"
    recipe.write_text("trainer:\n  max_epochs: 60\n")
    monkeypatch.setattr(rows, "ROOT", tmp_path)
    row = Row("r", "Recipe", "train.py", ("--config", "configs/r.yaml"), "--seed_everything")
    store = {"runs": {"r": {"0": {"command": row.signature(), "test_acc": 0.9}}}}
    assert rows.current_runs(store, row).keys() == {"0"}
    assert row.shown() == "scripts/train.py --data.data_dir DATA --config configs/r.yaml --seed_everything S"
    recipe.write_text("# a comment\ntrainer: {max_epochs: 60}\n")  # the same settings, written differently
    assert rows.current_runs(store, row).keys() == {"0"}
    recipe.write_text("trainer:\n  max_epochs: 32\n")  # same command line, another recipe
    assert rows.current_runs(store, row) == {}


def test_a_stored_run_is_current_only_where_auto_computes_what_it_measured(monkeypatch):
    from catdog_lightning import hardware
    from lab.rows import as_computed_here

    recipe = {"trainer": {"precision": "auto"}, "model": {"net": net_spec(feature_precision="auto"), "lr": 0.1}}
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda cpuinfo="/proc/cpuinfo": True)
    fast = as_computed_here(recipe)
    assert fast == {
        "trainer": {"precision": "bf16-mixed"},
        "model": {"net": net_spec(feature_precision="bf16"), "lr": 0.1},
    }
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda cpuinfo="/proc/cpuinfo": False)
    assert as_computed_here(recipe)["trainer"]["precision"] == "32-true"
    assert recipe["trainer"]["precision"] == "auto"  # the recipe itself is left as it was


def test_the_many_classes_table_sums_confused_pairs_over_seeds_and_reports_means():
    from lab.your_classes import table

    pair = lambda a, b, n: {"classes": [a, b], "mistakes": n}  # noqa: E731
    runs = [
        {"acc": 0.86, "f1": 0.83, "minutes": 2.0, "confused": [pair("pants", "shorts", 5), pair("dress", "skirt", 2)]},
        {"acc": 0.88, "f1": 0.85, "minutes": 3.0, "confused": [pair("pants", "shorts", 4)]},
    ]
    text = table({"probe": runs}, "../shared/data/clothing-10")
    row = next(line for line in text.splitlines() if line.startswith("| Lite1 linear probe"))
    assert "**87.0%** ± 1.4" in row and "| 0.840 |" in row and "pants/shorts 9, dress/skirt 2" in row
    assert "| 2.5 | 2 |" in row and "--data.data_dir ../shared/data/clothing-10" in text
