"""The command line of ``scripts/train.py``: LightningCLI-style flags, friendly errors.

jsonargparse builds the ``--data.*``, ``--model.*`` and ``--trainer.*`` flags from the signatures
of ``CatDogDataModule``, ``CatDogClassifier`` and ``lightning.Trainer`` (as LightningCLI does), so
their docstrings are the help text. Only the flags actually given are passed on to ``train()``, so
a resumed run keeps its saved settings unless a flag overrides them.
"""

from __future__ import annotations

import sys
from argparse import ArgumentError
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import lightning as L
from jsonargparse import ActionConfigFile, ArgumentParser
from lightning.fabric.utilities.exceptions import MisconfigurationException

from .errors import ConfigError, Interrupted, UserError

# Trainer arguments train() sets itself.
_TRAINER_OWNED = {"logger", "callbacks", "default_root_dir", "enable_checkpointing", "use_distributed_sampler"}


def build_parser() -> ArgumentParser:
    from .data import CatDogDataModule
    from .models import CatDogClassifier
    from .training import DEFAULT_LOGS_DIR, DEFAULT_SEED, TRAINER_DEFAULTS

    parser = ArgumentParser(
        prog="train.py",
        description="Train the cat/dog classifier, then test its best checkpoint. With no flags: the built-in "
        "synthetic dataset. Runs go to lightning_logs/<run_name>/; watch: tensorboard --logdir lightning_logs",
        exit_on_error=False,
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.replace('Parser key "', "--").replace('":', ":", 1) if text.startswith("Parser key") else text


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


def run_cli(
    command: Callable[[dict], object],
    argv: Sequence[str] | None = None,
    parser: ArgumentParser | None = None,
    parse: Callable[[ArgumentParser | None, Sequence[str] | None], dict] | None = None,
) -> int:
    """Parse flags and run ``command``; a user's mistake becomes one line on stderr and exit code 2."""
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
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .training import train

    return run_cli(train, argv)


def _add_run_flags(parser: ArgumentParser, prefix: str) -> None:
    """--run_name and --logs_dir of the scripts whose runs are named <prefix>_N."""
    from .training import DEFAULT_LOGS_DIR

    parser.add_argument("--run_name", type=str | None, default=None, help=f"run directory (default: next {prefix}_N)")
    parser.add_argument("--logs_dir", type=str, default=DEFAULT_LOGS_DIR, help="where run directories are written")


def build_numpy_parser() -> ArgumentParser:
    from .data import CatDogDataModule
    from .numpy_net import INITS
    from .numpy_training import DEFAULTS

    parser = ArgumentParser(
        prog="train_numpy.py",
        description="Train the lesson's from-scratch NumPy network on the same data and splits as train.py, "
        "printing the cost every --print_every iterations and logging to TensorBoard.",
        exit_on_error=False,
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

    return run_cli(train_numpy, argv, build_numpy_parser())


def build_lesson_parser() -> ArgumentParser:
    from .lesson import EPOCHS

    parser = ArgumentParser(
        prog="lesson.py",
        description="Run the lesson's PyTorch program as written (decode every photo every epoch, MLP, BCE, "
        "Adam 1e-3, batch 32, 200 epochs on all of train/) and report its accuracy on test/.",
        exit_on_error=False,
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

    return run_cli(run_lesson_cli, argv, build_lesson_parser(), parse=_parse_all)


def build_results_parser() -> ArgumentParser:
    from .results import DEFAULT_DATA, DEFAULT_PLOT, DEFAULT_STORE, DEFAULT_TABLE, ROWS, SEEDS

    parser = ArgumentParser(
        prog="results.py",
        description="Measure each model on real photos with several seeds and write docs/RESULTS.md. "
        "Runs already stored in docs/results.json with the same command line are kept, not re-run.",
        exit_on_error=False,
    )
    parser.add_argument("--data_dir", type=str, default=str(DEFAULT_DATA), help="folder with train/ and test/")
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

    return run_cli(run_results, argv, build_results_parser(), parse=_parse_all)


def _tool_parser(prog: str, description: str) -> ArgumentParser:
    from .training import DEFAULT_LOGS_DIR

    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument(
        "--ckpt_path",
        type=str | None,
        default=None,
        help="a checkpoint (default: best.ckpt of the most recent run under --logs_dir)",
    )
    parser.add_argument("--logs_dir", type=str, default=DEFAULT_LOGS_DIR, help="where runs are")
    return parser


def _checkpoint(args: dict) -> str:
    from .inference import default_checkpoint

    if args.get("ckpt_path"):
        return args["ckpt_path"]
    ckpt = str(default_checkpoint(args["logs_dir"]))
    print(f"Using {ckpt} (the most recent run's best checkpoint)", file=sys.stderr)
    return ckpt


def _parse_all(parser: ArgumentParser | None, argv: Sequence[str] | None) -> dict:
    return parser.parse_args(list(sys.argv[1:] if argv is None else argv)).as_dict()


def _run_tool(command: Callable[[dict], object], parser: ArgumentParser, argv: Sequence[str] | None) -> int:
    return run_cli(command, argv, parser, parse=_parse_all)


def predict_main(argv: Sequence[str] | None = None) -> int:
    parser = _tool_parser("predict.py", "P(cat) for image files and folders (searched recursively).")
    parser.add_argument("paths", nargs="+", help="image files and/or folders")
    parser.add_argument("--output", type=str | None, default=None, help="also write the predictions to .csv or .json")
    parser.add_argument("--batch_size", type=int, default=256, help="images per forward pass")

    def command(args: dict) -> None:
        from .data.scan import find_images
        from .inference import load_classifier
        from .reports import write_predictions

        output = args.get("output")
        if output and Path(output).suffix.lower() not in (".csv", ".json"):
            raise ConfigError(f"--output {output}: use a .csv or .json file name.")
        missing = [p for p in args["paths"] if not Path(p).exists()]
        if missing:
            raise ConfigError(f"{missing[0]}: no such file or folder.")
        paths = find_images(args["paths"])
        if not paths:
            raise ConfigError(f"no image files (.jpg .jpeg .png .bmp .webp) in {' '.join(args['paths'])}.")
        predictions = load_classifier(_checkpoint(args)).predict(paths, args["batch_size"])
        for p in predictions:
            if p.p_cat is not None:
                print(f"{p.path}\t{p.p_cat:.4f}\t{p.label}")
        skipped = [p for p in predictions if p.p_cat is None]
        for p in skipped:
            print(f"skipped {p.path}: {p.error}", file=sys.stderr)
        print(f"{len(predictions) - len(skipped)} predicted, {len(skipped)} skipped", file=sys.stderr)
        if output:
            write_predictions(predictions, output)
            print(f"wrote {output}", file=sys.stderr)

    return _run_tool(command, parser, argv)


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    parser = _tool_parser("evaluate.py", "Score a checkpoint on a labelled folder (its test/ when it has one).")
    parser.add_argument(
        "--data.data_dir",
        type=str | None,
        default=None,
        help="labelled photos, either layout (default: the data the checkpoint was trained on)",
    )
    parser.add_argument(
        "--report",
        type=str | None,
        default=None,
        help="JSON report path (default: evaluation.json in the checkpoint's run directory)",
    )
    parser.add_argument("--errors_grid", type=str | None, default=None, help="save a picture of the worst mistakes")

    def command(args: dict) -> None:
        import json

        from .checkpoints import read_checkpoint
        from .data.synthetic import DEFAULT_BUILTIN_DIR, ensure_builtin_dataset
        from .evaluation import evaluate_folder, evaluation_folder, format_report, save_errors_grid
        from .inference import load_classifier

        ckpt = _checkpoint(args)
        data_dir = args["data"]["data_dir"]
        if data_dir is None:  # the data this model was trained on
            data_dir = read_checkpoint(ckpt).get("datamodule_hyper_parameters", {}).get("data_dir")
            data_dir = data_dir or ensure_builtin_dataset(DEFAULT_BUILTIN_DIR)
        report = {"checkpoint": ckpt, **evaluate_folder(load_classifier(ckpt), evaluation_folder(data_dir))}
        print(format_report(report, ckpt))
        path = Path(args.get("report") or (Path(ckpt).parent.parent / "evaluation.json"))
        path.write_text(json.dumps(report, indent=2))
        print(f"  report     {path}")
        if args.get("errors_grid"):
            shown = save_errors_grid(report, args["errors_grid"])
            print(f"  errors     {args['errors_grid']} ({shown} worst mistakes)")

    return _run_tool(command, parser, argv)


def export_main(argv: Sequence[str] | None = None) -> int:
    parser = _tool_parser("export.py", "Export a checkpoint to ONNX or TorchScript (outputs P(cat)).")
    parser.add_argument("--format", type=str, default="onnx", help="onnx or torchscript")
    parser.add_argument("--output", type=str, help="the file to write, e.g. model.onnx or model.pt")

    def command(args: dict) -> None:
        from .export import export_model

        if not args.get("output"):
            raise ConfigError("--output is required, e.g. --output model.onnx")
        contract = export_model(_checkpoint(args), args["format"], args["output"])
        print(f"wrote {args['output']} ({args['format']})")
        for key, value in contract.items():
            print(f"  {key:<10} {value}")

    return _run_tool(command, parser, argv)
