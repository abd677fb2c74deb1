"""The command lines of the lab's programs: the lesson, the NumPy network, the benchmark, growth, results, stress.

Built with the product's own parser and one-line errors (:mod:`catdog_lightning.cli`); the lab sits on top
of the library, so nothing below imports this.
"""

from __future__ import annotations

from collections.abc import Sequence

from jsonargparse import ActionConfigFile, ArgumentParser

from catdog_lightning.cli import new_parser, parse_all, run_cli, run_tool
from catdog_lightning.training.settings import parse_checked


def _add_run_flags(parser: ArgumentParser, prefix: str) -> None:
    """--run_name and --logs_dir of the scripts whose runs are named <prefix>_N."""
    from catdog_lightning.storage.runs import DEFAULT_LOGS_DIR

    parser.add_argument("--run_name", type=str | None, default=None, help=f"run directory (default: next {prefix}_N)")
    parser.add_argument("--logs_dir", type=str, default=DEFAULT_LOGS_DIR, help="where run directories are written")


def build_numpy_parser() -> ArgumentParser:
    from catdog_lightning.data import CatDogDataModule
    from catdog_lightning.numpy_net import INITS

    from .numpy_training import DEFAULTS

    parser = new_parser(
        "train_numpy.py",
        "Train the lesson's from-scratch NumPy network on the same data and splits as train.py, "
        "printing the cost every --print_every iterations and logging to TensorBoard.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML config file")
    # Same folders, image size and split as train.py; batching and augmentation are the network's own here.
    skip = {"batch_size", "num_workers", "augment", "min_crop_scale", "normalize"}
    parser.add_class_arguments(CatDogDataModule, "data", skip=skip)
    flags = [
        ("layer_dims", list[int], "input size (3 * image_size^2), hidden sizes, then 1"),
        ("activations", str | list[str], "hidden activation(s), relu, tanh or sigmoid: one, or one per hidden layer"),
        ("lr", float, "gradient descent learning rate"),
        ("iterations", int, "passes over the training set"),
        ("init", str, f"weight initialisation: {' or '.join(INITS)}"),
        ("batch_size", int | None, "mini-batch size (default: full batch, as in the lesson)"),
        ("seed", int, "seed for the initial weights and the mini-batch order"),
        ("print_every", int, "print and log the cost every N iterations"),
    ]
    for name, kind, help_text in flags:
        parser.add_argument(f"--{name}", type=kind, default=DEFAULTS[name], help=help_text)
    _add_run_flags(parser, "numpy")
    return parser


def numpy_main(argv: Sequence[str] | None = None) -> int:
    from .numpy_training import train_numpy

    return run_cli(train_numpy, argv, build_numpy_parser(), parse=lambda parser, args: parse_checked(parser, args)[1])


def build_lesson_parser() -> ArgumentParser:
    from .lesson import EPOCHS

    parser = new_parser(
        "lesson.py",
        "Run the lesson's PyTorch program as written (decode every photo every epoch, MLP, BCE, "
        "Adam 1e-3, batch 32, 200 epochs on all of train/) and report its accuracy on test/.",
    )
    parser.add_argument(
        "--data_dir", type=str | None, default=None, help="folder with train/ and test/ (default: built-in data)"
    )
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="passes over train/")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the shuffles")
    parser.add_argument(
        "--decode_once",
        type=bool,
        default=False,
        help="decode the photos once instead of every epoch: the same result bit for bit, minutes sooner",
    )
    _add_run_flags(parser, "lesson")
    return parser


def lesson_main(argv: Sequence[str] | None = None) -> int:
    from .lesson import run_lesson_cli

    return run_cli(run_lesson_cli, argv, build_lesson_parser(), parse=parse_all)


def build_results_parser() -> ArgumentParser:
    from .results import DEFAULT_PLOT, DEFAULT_STORE, DEFAULT_TABLE
    from .rows import ROWS, SEEDS

    parser = new_parser(
        "results.py",
        "Measure each model on real photos with several seeds and write docs/RESULTS.md. "
        "Runs already stored in docs/results.json with the same command line are kept, not re-run.",
    )
    parser.add_argument(
        "--data_dir", type=str, required=True, help="folder with train/ and test/ (make results uses catdog-a)"
    )
    parser.add_argument(
        "--rows", type=list[str] | None, default=None, help=f"rows to measure: {', '.join(r.key for r in ROWS)}"
    )
    parser.add_argument("--seeds", type=list[int], default=list(SEEDS), help="seeds to run each row with")
    parser.add_argument("--redo", type=bool, default=False, help="re-run stored (row, seed) pairs too")
    parser.add_argument("--render_only", type=bool, default=False, help="only rewrite the table from the store")
    parser.add_argument("--store", type=str, default=str(DEFAULT_STORE), help="JSON file of the measurements")
    parser.add_argument("--table", type=str, default=str(DEFAULT_TABLE), help="the Markdown table to write")
    parser.add_argument("--plot", type=str, default=str(DEFAULT_PLOT), help="the accuracy/time picture to write")
    parser.add_argument("--logs_dir", type=str, default="lightning_logs/results", help="where the runs are written")
    return parser


def results_main(argv: Sequence[str] | None = None) -> int:
    from .results import run_results

    return run_cli(run_results, argv, build_results_parser(), parse=parse_all)


def benchmark_main(argv: Sequence[str] | None = None) -> int:
    from .benchmark import run_benchmark_cli

    parser = new_parser(
        "benchmark.py",
        "Time the lesson's pipeline, this project's, and the compute floor side by side (the MLP; the CNN recipe "
        "in fp32 and bf16; thread and worker settings), each in a fresh process, and print medians and ratios.",
    )
    parser.add_argument("--data_dir", type=str | None, default=None, help="folder with train/ (default: built-in data)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs timed for each pipeline (at least 2)")
    parser.add_argument(
        "--parts",
        type=list[str] | None,
        default=None,
        help="some of [mlp,cnn,threads,backbones,shards,inference] (default: all but inference, which needs "
        "--ckpt_path)",
    )
    parser.add_argument(
        "--ckpt_path",
        type=str | None,
        default=None,
        help="the checkpoint --parts [inference] times (torch fp32/channels_last/bf16, ONNX fp32, INT8)",
    )
    parser.add_argument("--accelerator", type=str, default="cpu", help="cpu, or gpu to time the CNN on a CUDA GPU")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    return run_tool(run_benchmark_cli, parser, argv)


def growth_main(argv: Sequence[str] | None = None) -> int:
    from .growth import run_growth

    parser = new_parser(
        "growth.py",
        "Cache build, start, epoch time and peak RSS of the default run on generated folders of 2k, 10k and 25k "
        "pictures (and a real folder with --data_dir): a table, docs/growth.json and docs/growth.png.",
    )
    parser.add_argument("--data_dir", type=str | None, default=None, help="a real folder with train/ to add")
    parser.add_argument(
        "--sizes", type=list[int] | None, default=None, help="train images (default [2000,10000,25000])"
    )
    parser.add_argument("--work_dir", type=str | None, default=None, help="where the pictures go (default data/growth)")
    parser.add_argument("--out_dir", type=str | None, default=None, help="where growth.json/.png go (default docs)")
    return run_tool(run_growth, parser, argv)


def your_classes_main(argv: Sequence[str] | None = None) -> int:
    from .your_classes import RECIPES, run

    parser = new_parser(
        "your_classes.py",
        "The pretrained recipes, unchanged but for --data.data_dir, on a folder of class folders: accuracy, macro "
        "F1, the most confused pairs and minutes per seed, one run at a time (docs/your-classes.md's table).",
    )
    parser.add_argument("--data_dir", type=str, required=True, help="a folder with train/ (and test/) class folders")
    parser.add_argument("--logs_dir", type=str, default="lightning_logs/your-classes", help="where the runs go")
    parser.add_argument("--recipes", type=list[str], default=list(RECIPES), help="configs/<recipe>.yaml to run")
    parser.add_argument("--seeds", type=list[int], default=[0, 1, 2], help="seeds, each run in a fresh process")
    parser.add_argument("--write_docs", type=bool, default=False, help="write docs/your-classes.json (RESULTS.md)")
    parser.add_argument("--collect_only", type=bool, default=False, help="only tabulate the runs in --logs_dir")
    return run_tool(run, parser, argv)


def stress_main(argv: Sequence[str] | None = None) -> int:
    from .stress import run_stress

    parser = new_parser(
        "stress.py",
        "By hand, not in CI: kill -9 training runs at random moments and resume them, start two at once, resume "
        "a live one, fill a tiny disk; print faults tried / survived / identical to an undisturbed run.",
    )
    parser.add_argument("--trials", type=int, default=6, help="kill -9 trials (1 to 3 kills each)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    return run_tool(run_stress, parser, argv)


def loadtest_main(argv: Sequence[str] | None = None) -> int:
    from catdog_lightning.storage.runs import DEFAULT_LOGS_DIR

    from .loadtest import run_loadtest

    parser = new_parser(
        "loadtest.py",
        "Start scripts/serve.py (or reach --url), send real photos from N concurrent clients for T seconds, print "
        "requests/s, latency percentiles, errors and the server's memory, and compare with in-process predict.",
    )
    parser.add_argument("--data_dir", type=str, required=True, help="photos (its test/ when it has one)")
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="a checkpoint file, last or best")
    parser.add_argument("--logs_dir", type=str, default=DEFAULT_LOGS_DIR, help="where runs are")
    parser.add_argument("--url", type=str | None, default=None, help="a running server instead of starting one")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=30, help="how long to send requests")
    parser.add_argument("--requests", type=int, default=1_000_000, help="stop after this many requests")
    parser.add_argument("--photos", type=int, default=400, help="distinct photos sent round robin")
    parser.add_argument("--backend", type=str, default="torch", help="the started server's backend: torch or onnx")
    parser.add_argument("--workers", type=int, default=1, help="the started server's inference processes")
    parser.add_argument("--max_batch_size", type=int, default=16, help="the started server's batch size")
    parser.add_argument("--api_key", type=str | None, default=None, help="X-API-Key to send (and to start with)")
    return run_tool(run_loadtest, parser, argv)
