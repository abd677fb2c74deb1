"""The command line of ``scripts/train.py``: LightningCLI-style flags, friendly errors.

jsonargparse builds the ``--data.*``, ``--model.*`` and ``--trainer.*`` flags from the signatures
of ``CatDogDataModule``, ``CatDogClassifier`` and ``lightning.Trainer`` (as LightningCLI does), so
their docstrings are the help text. Only the flags actually given are passed on to ``train()``, so
a resumed run keeps its saved settings unless a flag overrides them.

The parsers of every script live here, and nothing else does: each command's body is with its subject
(training, inference, evaluation, export, the lab). Over 250 lines because that is nine parsers.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from argparse import ArgumentError
from collections.abc import Callable, Sequence
from typing import Literal

import lightning as L
from jsonargparse import ActionConfigFile, ArgumentParser
from lightning.fabric.utilities.exceptions import MisconfigurationException

from .errors import Interrupted, UserError

# Trainer arguments train() sets itself.
# (--trainer.callbacks and --trainer.logger add to ours: TensorBoard and the checkpoints are always there.)
_TRAINER_OWNED = {"default_root_dir", "enable_checkpointing", "use_distributed_sampler"}


def _new_parser(prog: str, description: str) -> ArgumentParser:
    """Errors come back to :func:`run_cli` as one line; no abbreviations (--trainer.max_epoch is a typo)."""
    return ArgumentParser(prog=prog, description=description, exit_on_error=False, allow_abbrev=False)


def build_parser() -> ArgumentParser:
    from .data import CatDogDataModule
    from .models import CatDogClassifier
    from .runs import DEFAULT_LOGS_DIR
    from .training import DEFAULT_SEED, TRAINER_DEFAULTS

    parser = _new_parser(
        "train.py",
        "Train the cat/dog classifier, then test its best checkpoint. With no flags: the built-in "
        "synthetic dataset. Runs go to lightning_logs/<run_name>/; watch: tensorboard --logdir lightning_logs",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML config file (e.g. a run's config.yaml)")
    parser.add_class_arguments(CatDogDataModule, "data")
    parser.add_class_arguments(CatDogClassifier, "model", skip={"image_size"})  # follows --data.image_size
    parser.add_class_arguments(L.Trainer, "trainer", skip=_TRAINER_OWNED)
    parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})
    parser.add_argument("--seed_everything", type=int, default=DEFAULT_SEED, help="seed for weights and shuffling")
    parser.add_argument(
        "--ckpt_path",
        type=str | None,
        default=None,
        help="resume: 'last' (the most recent run, or --run_name's) or a checkpoint file",
    )
    parser.add_argument(
        "--run_name",
        type=str | None,
        default=None,
        help="run directory name under --logs_dir (default: the next version_N)",
    )
    parser.add_argument("--logs_dir", type=str, default=DEFAULT_LOGS_DIR, help="where run directories are written")
    parser.add_argument(
        "--checkpoint_every_n_steps",
        type=int,
        default=0,
        help="also rewrite last.ckpt every N training steps, for long epochs (0 = off)",
    )
    parser.add_argument(
        "--early_stopping_patience",
        type=int,
        default=0,
        help="stop after N epochs without a better val/acc (0 = off)",
    )
    parser.add_argument(
        "--test_checkpoint",
        type=Literal["best", "last"],
        default="best",
        help="checkpoint the test split measures: best (highest val/acc) or last (the end of training, "
        "better after a schedule that anneals the learning rate, when a small validation set is noisy)",
    )
    parser.add_argument(
        "--log_images",
        type=bool,
        default=True,
        help="TensorBoard pictures: validation predictions, confusion matrix, PR curve, model graph",
    )
    return parser


_TYPE_WORDS = {"float": "a number", "int": "a whole number", "bool": "true or false", "str": "text"}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text.replace('Parser key "', "--").replace('":', ":", 1) if text.startswith("Parser key") else text
    # jsonargparse speaks Python ("Expected a <class 'float'>. Got value: abc"); say it in words.
    return re.sub(
        r"Expected a <class '(\w+)'>\. Got value: (.*)",
        lambda m: f"expected {_TYPE_WORDS.get(m.group(1), m.group(1))}, got {m.group(2)}",
        text,
    )


def parse_flags(argv: Sequence[str] | None = None, parser: ArgumentParser | None = None) -> dict:
    """The flags given on the command line (and in ``--config``), validated, as a nested dict."""
    parser = parser or build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser.parse_args(argv)  # validates every value, and handles --help / --print_config
    given = parser.parse_args(argv, defaults=False).as_dict()
    given.pop("config", None)
    if "logs_dir" not in given:
        given["logs_dir"] = parser.get_defaults().logs_dir
    return given


def _quiet_disk_errors_in_threads(args) -> None:
    """TensorBoard writes its events from a thread of its own; on a full disk that thread fails too, while
    the main thread reports it in one line: no second report, as a traceback, from the thread."""
    if not isinstance(args.exc_value, OSError):
        threading.__excepthook__(args)


def run_cli(
    command: Callable[[dict], object],
    argv: Sequence[str] | None = None,
    parser: ArgumentParser | None = None,
    parse: Callable[[ArgumentParser | None, Sequence[str] | None], dict] | None = None,
) -> int:
    """Parse flags and run ``command``; a user's mistake becomes one line on stderr and exit code 2."""
    threading.excepthook = _quiet_disk_errors_in_threads
    try:
        command(parse(parser, argv) if parse else parse_flags(argv, parser))
    except ArgumentError as exc:
        print(f"error: {_one_line(exc)} (see --help)", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except MisconfigurationException as exc:  # Lightning refusing a --trainer.* value
        print(f"error: {_one_line(exc)} (check the --trainer.* flags)", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"\n{stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:  # Ctrl-C before training began (decoding, loading): nothing was written
        print("\ninterrupted before training began; nothing was saved.", file=sys.stderr)
        return 130
    return 0


def quiet_lightning() -> None:
    """Lightning's banners and tips ("GPU available: ...", "Tip: try installing ...") off: the run's own
    lines, warnings and errors are what a person or a log file should see. LIGHTNING_VERBOSE=1 keeps them."""
    if not os.environ.get("LIGHTNING_VERBOSE"):
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)


SUBCOMMANDS = ("fit", "validate", "test", "predict")


def main(argv: Sequence[str] | None = None) -> int:
    """``train.py [fit|validate|test|predict] [flags]``: LightningCLI's subcommands; no subcommand means fit."""
    from .evaluation import stage_command
    from .training import train

    quiet_lightning()
    argv = list(sys.argv[1:] if argv is None else argv)
    stage = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "fit"
    if stage == "fit":
        return run_cli(train, argv)
    return run_cli(lambda flags: stage_command(stage, flags), argv)


def _add_run_flags(parser: ArgumentParser, prefix: str) -> None:
    """--run_name and --logs_dir of the scripts whose runs are named <prefix>_N."""
    from .runs import DEFAULT_LOGS_DIR

    parser.add_argument("--run_name", type=str | None, default=None, help=f"run directory (default: next {prefix}_N)")
    parser.add_argument("--logs_dir", type=str, default=DEFAULT_LOGS_DIR, help="where run directories are written")


def build_numpy_parser() -> ArgumentParser:
    from .data import CatDogDataModule
    from .lab.numpy_training import DEFAULTS
    from .numpy_net import INITS

    parser = _new_parser(
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
    from .lab.numpy_training import train_numpy

    return run_cli(train_numpy, argv, build_numpy_parser())


def build_lesson_parser() -> ArgumentParser:
    from .lab.lesson import EPOCHS

    parser = _new_parser(
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
    from .lab.lesson import run_lesson_cli

    return run_cli(run_lesson_cli, argv, build_lesson_parser(), parse=_parse_all)


def build_results_parser() -> ArgumentParser:
    from .lab.results import DEFAULT_PLOT, DEFAULT_STORE, DEFAULT_TABLE
    from .lab.rows import ROWS, SEEDS

    parser = _new_parser(
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
    from .lab.results import run_results

    return run_cli(run_results, argv, build_results_parser(), parse=_parse_all)


def _tool_parser(prog: str, description: str) -> ArgumentParser:
    from .runs import DEFAULT_LOGS_DIR

    parser = _new_parser(prog, description)
    parser.add_argument(
        "--ckpt_path",
        type=str | None,
        default=None,
        help="a checkpoint (default: best.ckpt of the most recent run under --logs_dir)",
    )
    parser.add_argument("--logs_dir", type=str, default=DEFAULT_LOGS_DIR, help="where runs are")
    return parser


def _parse_all(parser: ArgumentParser | None, argv: Sequence[str] | None) -> dict:
    return parser.parse_args(list(sys.argv[1:] if argv is None else argv)).as_dict()


def _run_tool(command: Callable[[dict], object], parser: ArgumentParser, argv: Sequence[str] | None) -> int:
    return run_cli(command, argv, parser, parse=_parse_all)


def predict_main(argv: Sequence[str] | None = None) -> int:
    from .inference import predict_command

    parser = _tool_parser("predict.py", "P(cat) for image files and folders (searched recursively).")
    parser.add_argument("paths", nargs="+", help="image files and/or folders")
    parser.add_argument("--output", type=str | None, default=None, help="also write the predictions to .csv or .json")
    parser.add_argument("--batch_size", type=int, default=256, help="images per forward pass")
    return _run_tool(predict_command, parser, argv)


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    from .evaluation import evaluate_command

    parser = _tool_parser(
        "evaluate.py",
        "Score a checkpoint on its run's own test split, with the decode cache and splits training used; or "
        "on a labelled folder (its test/ when it has one).",
    )
    parser.add_argument(
        "--data.data_dir",
        type=str | None,
        default=None,
        help="labelled photos, either layout (default: the test split of the data the checkpoint was trained on)",
    )
    parser.add_argument(
        "--report",
        type=str | None,
        default=None,
        help="JSON report path (default: evaluation.json in the checkpoint's run directory)",
    )
    parser.add_argument("--errors_grid", type=str | None, default=None, help="save a picture of the worst mistakes")
    return _run_tool(evaluate_command, parser, argv)


def export_main(argv: Sequence[str] | None = None) -> int:
    from .export import export_command

    parser = _tool_parser("export.py", "Export a checkpoint to ONNX or TorchScript (outputs P(cat)).")
    parser.add_argument("--format", type=str, default="onnx", help="onnx or torchscript")
    parser.add_argument("--output", type=str, help="the file to write, e.g. model.onnx or model.pt")
    return _run_tool(export_command, parser, argv)


def benchmark_main(argv: Sequence[str] | None = None) -> int:
    from .lab.benchmark import run_benchmark_cli

    parser = _new_parser(
        "benchmark.py",
        "Time the lesson's pipeline, this project's, and the compute floor side by side (the MLP; the CNN recipe "
        "in fp32 and bf16; thread and worker settings), each in a fresh process, and print medians and ratios.",
    )
    parser.add_argument("--data_dir", type=str | None, default=None, help="folder with train/ (default: built-in data)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs timed for each pipeline (at least 2)")
    parser.add_argument("--parts", type=list[str] | None, default=None, help="some of [mlp,cnn,threads] (default: all)")
    parser.add_argument("--accelerator", type=str, default="cpu", help="cpu, or gpu to time the CNN on a CUDA GPU")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    return _run_tool(run_benchmark_cli, parser, argv)


def growth_main(argv: Sequence[str] | None = None) -> int:
    from .lab.growth import run_growth

    parser = _new_parser(
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
    return _run_tool(run_growth, parser, argv)


def stress_main(argv: Sequence[str] | None = None) -> int:
    from .lab.stress import run_stress

    parser = _new_parser(
        "stress.py",
        "By hand, not in CI: kill -9 training runs at random moments and resume them, start two at once, resume "
        "a live one, fill a tiny disk; print faults tried / survived / identical to an undisturbed run.",
    )
    parser.add_argument("--trials", type=int, default=6, help="kill -9 trials (1 to 3 kills each)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    return _run_tool(run_stress, parser, argv)
