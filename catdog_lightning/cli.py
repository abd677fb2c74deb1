"""The product's command lines: LightningCLI-style flags, friendly errors.

train.py's flags are a run's settings (:mod:`catdog_lightning.training.settings` builds them from the
signatures of the DataModule, the LightningModule and ``lightning.Trainer``, as LightningCLI does). Only
the flags actually given are passed on to ``train()``, so a resumed run keeps its saved settings unless a
flag overrides them.

The parsers of the product's commands (train, predict, evaluate, export) live here, and nothing else does:
each command's body is with its subject. The lab's programs have their own parsers in ``lab/cli.py``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from argparse import ArgumentError
from collections.abc import Callable, Sequence
from pathlib import Path

from jsonargparse import ArgumentParser
from lightning.fabric.utilities.exceptions import MisconfigurationException

from .errors import Interrupted, UserError
from .storage.yaml_files import load_yaml, read_yaml_file
from .training.settings import check_class_paths, new_parser, one_line, settings_parser


def parse_flags(argv: Sequence[str] | None = None, parser: ArgumentParser | None = None) -> dict:
    """The flags given on the command line (and in ``--config``), validated, as a nested dict."""
    parser = parser or settings_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    allowed = flag_values(argv, "--allow_modules")
    allowed = tuple(str(m) for value in allowed for m in (value if isinstance(value, list) else [value]))
    for value in flag_values(argv, "--config"):  # read here with limits, and its classes checked, before jsonargparse
        if isinstance(value, str) and Path(value).is_file():
            check_class_paths(read_yaml_file(value), value, allowed)
        else:
            check_class_paths(value, "--config", allowed)
    parser.parse_args(argv)  # validates every value, and handles --help / --print_config
    given = parser.parse_args(argv, defaults=False).as_dict()
    given.pop("config", None)
    given.pop("allow_modules", None)  # from the command line alone: a file never allows code for itself
    if allowed:
        given["allow_modules"] = list(allowed)
    if "logs_dir" not in given:
        given["logs_dir"] = parser.get_defaults().logs_dir
    return given


def flag_values(argv: Sequence[str], flag: str) -> list:
    """Each value given to ``flag`` in ``argv`` (``flag VALUE`` or ``flag=VALUE``), read as YAML."""
    values = []
    for i, token in enumerate(argv):
        if token == flag and i + 1 < len(argv):
            text = argv[i + 1]
        elif token.startswith(f"{flag}="):
            text = token.split("=", 1)[1]
        else:
            continue
        values.append(text if Path(text).is_file() else load_yaml(text, flag))
    return values


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
        print(f"error: {one_line(exc)} (see --help)", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except MisconfigurationException as exc:  # Lightning refusing a --trainer.* value
        print(f"error: {one_line(exc)} (check the --trainer.* flags)", file=sys.stderr)
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
