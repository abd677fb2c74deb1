"""The product's command lines: what each command sets for its process, friendly errors, the small parsers.

train.py's flags are a run's settings, parsed by Lightning's LightningCLI (``CatDogCLI`` in
:mod:`catdog_lightning.training.settings`, with the checks a run needs around its parse). Only the settings a
flag or a file names are passed on to ``train()``, so a resumed run keeps its saved settings unless one is
named again.

The parsers of the product's commands (train, predict, evaluate, export) live here, and nothing else does:
each command's body is with its subject. The lab's programs have their own parsers in ``lab/cli.py``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from argparse import ArgumentError
from collections.abc import Callable, Sequence
from contextlib import contextmanager

from jsonargparse import ArgumentParser
from lightning.fabric.utilities.exceptions import MisconfigurationException

from .errors import CatDogWarning, Interrupted, UserError
from .training.settings import CatDogCLI, new_parser, one_line
from .training.trainer import known_warnings_quiet


def parse_flags(argv: Sequence[str] | None = None) -> dict:
    """The settings given on the command line (and in its settings files), checked, as a nested dict: LightningCLI's
    parse with our checks around it (:class:`~catdog_lightning.training.settings.CatDogCLI`)."""
    return CatDogCLI(list(sys.argv[1:] if argv is None else argv)).given


def _quiet_disk_errors_in_threads(args) -> None:
    """TensorBoard writes its events from a thread of its own; on a full disk that thread fails too, while
    the main thread reports it in one line: no second report, as a traceback, from the thread."""
    if not isinstance(args.exc_value, OSError):
        threading.__excepthook__(args)


def _in_words(show: Callable) -> Callable:
    """Our warnings (skipped photos, overlapping splits) as one line in words, not Python's format with the
    library's file and line; any other warning as ``show`` shows it."""

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, CatDogWarning):
            print(f"warning: {' '.join(str(message).split())}", file=file or sys.stderr, flush=True)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


@contextmanager
def command_settings():
    """What a command sets for its process, for as long as it runs, and no longer: the disk-error thread hook,
    warnings in words, the known warnings off, Lightning's banners quiet, and the folder it runs in at the end of
    the import path (``python scripts/train.py`` puts scripts/ there instead), so a module of your own that
    ``--allow_modules`` allows is found there, after everything installed. A library call sets none of it."""
    hook, levels = threading.excepthook, {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    threading.excepthook = _quiet_disk_errors_in_threads
    quiet_lightning()
    here = os.getcwd()
    added = here not in sys.path
    if added:
        sys.path.append(here)
    try:
        with known_warnings_quiet():  # restores warnings.showwarning too
            warnings.showwarning = _in_words(warnings.showwarning)
            yield
    finally:
        threading.excepthook = hook
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if added and here in sys.path:
            sys.path.remove(here)


def run_cli(
    command: Callable[[dict], object],
    argv: Sequence[str] | None = None,
    parser: ArgumentParser | None = None,
    parse: Callable[[ArgumentParser | None, Sequence[str] | None], dict] | None = None,
) -> int:
    """Parse flags and run ``command``; a user's mistake becomes one line on stderr and exit code 2. Lightning's
    banners and tips, and the warnings nobody can act on, stay quiet for every command (LIGHTNING_VERBOSE=1)."""
    try:
        with command_settings():
            command(parse(parser, argv) if parse else parse_flags(argv))
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


LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


def quiet_lightning() -> None:
    """Lightning's banners and tips ("GPU available: ...", "Tip: try installing ...") off: the run's own
    lines, warnings and errors are what a person or a log file should see. LIGHTNING_VERBOSE=1 keeps them."""
    if not os.environ.get("LIGHTNING_VERBOSE"):
        for name in LIGHTNING_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


SUBCOMMANDS = ("fit", "validate", "test", "predict", "lr_find")


def main(argv: Sequence[str] | None = None) -> int:
    """``train.py [fit|validate|test|predict|lr_find] [flags]``: LightningCLI's subcommands (and Lightning's
    learning-rate finder); no subcommand means fit."""
    from .training import train
    from .training.stages import stage_command

    argv = list(sys.argv[1:] if argv is None else argv)
    stage = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "fit"
    if stage in ("fit", "lr_find"):  # the process is the command's: training steps keep their memory
        from .training.allocator import keep_freed_memory

        keep_freed_memory()
    if stage == "fit":
        return run_cli(train, argv)
    if stage == "lr_find":
        from .training.lr_find import lr_find_command

        return run_cli(lr_find_command, argv)
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
    parser.add_argument(
        "--allow_modules",
        type=list[str] | str,
        default=[],
        help="modules beyond this package the checkpoint's network may come from (--model.net of your own): one "
        "or a list; nothing else is imported from a checkpoint",
    )
    return parser


def parse_all(parser: ArgumentParser | None, argv: Sequence[str] | None) -> dict:
    return parser.parse_args(list(sys.argv[1:] if argv is None else argv)).as_dict()


def run_tool(command: Callable[[dict], object], parser: ArgumentParser, argv: Sequence[str] | None) -> int:
    return run_cli(command, argv, parser, parse=parse_all)


def _backend_flag(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        type=str,
        default="torch",
        help="torch (the checkpoint in PyTorch), onnx (its export on ONNX Runtime) or int8 (the export quantised "
        "to INT8 on ONNX Runtime, calibrated on the run's training photos: fastest on a CPU)",
    )


def predict_main(argv: Sequence[str] | None = None) -> int:
    from .inference.predictor import predict_command

    parser = _tool_parser("predict.py", "P(cat) for image files and folders (searched recursively).")
    parser.add_argument("paths", nargs="+", help="image files and/or folders")
    parser.add_argument("--output", type=str | None, default=None, help="also write the predictions to .csv or .json")
    parser.add_argument("--batch_size", type=int, default=256, help="images per forward pass")
    _backend_flag(parser)
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
    _backend_flag(parser)
    return run_tool(evaluate_command, parser, argv)


def export_main(argv: Sequence[str] | None = None) -> int:
    from .inference.export import export_command

    parser = _tool_parser("export.py", "Export a checkpoint to ONNX or TorchScript (outputs P(cat)).")
    parser.add_argument(
        "--format",
        type=str,
        default="onnx",
        help="onnx, onnx-int8 (quantised to INT8, calibrated on the run's training photos) or torchscript",
    )
    parser.add_argument("--output", type=str, help="the file to write, e.g. model.onnx or model.pt")
    return run_tool(export_command, parser, argv)


def shard_main(argv: Sequence[str] | None = None) -> int:
    from .data.sharding import shard_command

    parser = new_parser(
        "shard.py",
        "Write a photo folder's train, validation and test splits as LitData shards (the photos' own compressed "
        "bytes), to train from with --data.data_dir SHARDS (a folder, or an s3:// URL of a copy of it).",
    )
    parser.add_argument(
        "--data_dir", type=str, required=True, help="photos: a folder holding train/ (and test/), as for train.py"
    )
    parser.add_argument("--output", type=str, required=True, help="a new or empty folder for the shards")
    parser.add_argument("--val_fraction", type=float, default=0.1, help="as train.py's --data.val_fraction")
    parser.add_argument("--test_fraction", type=float, default=0.1, help="as --data.test_fraction (no test/ folder)")
    parser.add_argument("--split_seed", type=int, default=42, help="as --data.split_seed")
    parser.add_argument("--workers", type=int | None, default=None, help="processes writing shards (default: cores)")
    return run_tool(shard_command, parser, argv)


def serve_main(argv: Sequence[str] | None = None) -> int:
    from .serving.server import serve_command

    parser = _tool_parser(
        "serve.py",
        "Serve a trained model over HTTP with LitServe: POST /predict (a multipart field 'image', or JSON "
        '{"image": "<base64>"}), GET /health, GET /info, and a page at / to drop photos on.',
    )
    parser.add_argument("--host", type=str, default="127.0.0.1", help="127.0.0.1 (this machine) or 0.0.0.0 (all)")
    parser.add_argument("--port", type=int, default=8000, help="the port to listen on")
    parser.add_argument("--workers", type=int, default=1, help="inference processes (the cores are shared out)")
    parser.add_argument("--max_batch_size", type=int, default=16, help="requests pooled into one forward pass")
    parser.add_argument(
        "--batch_timeout", type=float, default=0.005, help="seconds a batch waits for more requests to arrive"
    )
    parser.add_argument("--timeout", type=float, default=30, help="seconds a request may wait before a 504")
    parser.add_argument("--max_upload_mb", type=float, default=10, help="larger requests get a 413")
    parser.add_argument(
        "--api_key",
        type=str | None,
        default=None,
        help="require this X-API-Key header on every route but the page (a flag shows in ps: prefer "
        "--api_key_file or $CATDOG_API_KEY)",
    )
    parser.add_argument(
        "--api_key_file", type=str | None, default=None, help="read the key from this file's first line"
    )
    parser.add_argument("--max_photos", type=int, default=64, help="photos one request may hold (more: a 413)")
    parser.add_argument(
        "--max_pixels",
        type=int,
        default=40_000_000,
        help="pixels one photo may have, read from its header before decoding (more: a 422)",
    )
    _backend_flag(parser)
    return run_tool(serve_command, parser, argv)


# sweep.py's own flags (each takes a value); every other flag is train.py's, given to each trial.
SWEEP_FLAGS = {
    "--search": (str, None, "the search-space file, e.g. configs/search/cnn.yaml (required)"),
    "--n_trials": (int, 20, "finished trials the study should hold, all workers together"),
    "--storage": (str, None, "an Optuna storage URL (default: sqlite:///<logs_dir>/optuna.db)"),
    "--study_name": (str, None, "the study to create or continue (default: the search file's name)"),
    "--heartbeat_s": (int, 30, "seconds between a trial's heartbeats; a worker silent for two is failed, retried"),
    "--logs_dir": (str, None, "where the trials' runs and the sweep's report go (default lightning_logs)"),
}


def split_sweep_flags(argv: Sequence[str]) -> tuple[dict, list[str]]:
    """sweep.py's flags (typed, with defaults) and the rest, train.py's, in their order."""
    own = {name[2:]: default for name, (_, default, _) in SWEEP_FLAGS.items()}
    rest, tokens = [], list(argv)
    while tokens:
        token = tokens.pop(0)
        name, _, value = token.partition("=")
        if name not in SWEEP_FLAGS:
            rest.append(token)
            continue
        if not value:
            if not tokens:
                raise ArgumentError(None, f"{name} needs a value")
            value = tokens.pop(0)
        kind = SWEEP_FLAGS[name][0]
        try:
            own[name[2:]] = kind(value)
        except ValueError:
            expected = "a whole number" if kind is int else "text"
            raise ArgumentError(None, f"{name}: expected {expected}, got {value}") from None
    if not own["search"]:
        raise ArgumentError(None, "--search is required: the search-space file, e.g. configs/search/cnn.yaml")
    if own["logs_dir"] is None:
        from .storage.runs import DEFAULT_LOGS_DIR

        own["logs_dir"] = DEFAULT_LOGS_DIR
    return own, rest


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """``sweep.py --search FILE [--n_trials N] [--storage URL] [--study_name NAME] [train.py flags]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print("usage: sweep.py --search FILE [sweep flags] [train.py flags, given to every trial]\n")
        print("A hyperparameter sweep on Optuna: each trial an ordinary train.py run; the best written as a recipe.")
        for name, (_, default, help_text) in SWEEP_FLAGS.items():
            print(f"  {name:<14} {help_text}" + (f" (default {default})" if default is not None else ""))
        print("  train.py's flags (see python scripts/train.py --help), e.g. --config configs/cnn-fast.yaml")
        return 0
    from .sweeps.study import run_sweep

    def command(parsed: tuple[dict, list[str]]) -> None:
        own, rest = parsed
        run_sweep(own, rest, parse_flags)

    return run_cli(command, argv, parse=lambda _, args: split_sweep_flags(args))
