"""The command line of ``scripts/train.py``: LightningCLI-style flags, friendly errors.

jsonargparse builds the ``--data.*``, ``--model.*`` and ``--trainer.*`` flags from the signatures
of ``CatDogDataModule``, ``CatDogClassifier`` and ``lightning.Trainer`` (as LightningCLI does), so
their docstrings are the help text. Only the flags actually given are passed on to ``train()``, so
a resumed run keeps its saved settings unless a flag overrides them.

The parsers of the product's commands (train, predict, evaluate, export) live here, and nothing else does:
each command's body is with its subject. The lab's programs have their own parsers in ``lab/cli.py``.
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


def new_parser(prog: str, description: str) -> ArgumentParser:
    """Errors come back to :func:`run_cli` as one line; no abbreviations (--trainer.max_epoch is a typo)."""
    return ArgumentParser(prog=prog, description=description, exit_on_error=False, allow_abbrev=False)


def build_parser() -> ArgumentParser:
    from .data import CatDogDataModule
    from .models import CatDogClassifier
    from .storage.runs import DEFAULT_LOGS_DIR
    from .training.trainer import DEFAULT_SEED, TRAINER_DEFAULTS

    parser = new_parser(
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
    from .training import train
    from .training.stages import stage_command

    quiet_lightning()
    argv = list(sys.argv[1:] if argv is None else argv)
    stage = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "fit"
    if stage == "fit":
        return run_cli(train, argv)
    return run_cli(lambda flags: stage_command(stage, flags), argv)


def _tool_parser(prog: str, description: str) -> ArgumentParser:
    from .storage.runs import DEFAULT_LOGS_DIR

    parser = new_parser(prog, description)
    parser.add_argument(
        "--ckpt_path",
        type=str | None,
        default=None,
        help="a checkpoint file, last or best (default: best.ckpt of the most recent run under --logs_dir)",
    )
    parser.add_argument("--logs_dir", type=str, default=DEFAULT_LOGS_DIR, help="where runs are")
    return parser


def parse_all(parser: ArgumentParser | None, argv: Sequence[str] | None) -> dict:
    return parser.parse_args(list(sys.argv[1:] if argv is None else argv)).as_dict()


def run_tool(command: Callable[[dict], object], parser: ArgumentParser, argv: Sequence[str] | None) -> int:
    return run_cli(command, argv, parser, parse=parse_all)


def predict_main(argv: Sequence[str] | None = None) -> int:
    from .inference.predictor import predict_command

    parser = _tool_parser("predict.py", "P(cat) for image files and folders (searched recursively).")
    parser.add_argument("paths", nargs="+", help="image files and/or folders")
    parser.add_argument("--output", type=str | None, default=None, help="also write the predictions to .csv or .json")
    parser.add_argument("--batch_size", type=int, default=256, help="images per forward pass")
    return run_tool(predict_command, parser, argv)


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    from .inference.evaluation import evaluate_command

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
    return run_tool(evaluate_command, parser, argv)


def export_main(argv: Sequence[str] | None = None) -> int:
    from .inference.export import export_command

    parser = _tool_parser("export.py", "Export a checkpoint to ONNX or TorchScript (outputs P(cat)).")
    parser.add_argument("--format", type=str, default="onnx", help="onnx or torchscript")
    parser.add_argument("--output", type=str, help="the file to write, e.g. model.onnx or model.pt")
    return run_tool(export_command, parser, argv)
