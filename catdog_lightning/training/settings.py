"""A run's settings: their schema, and the checks a settings file goes through before anything uses it.

The schema is train.py's flags, built by Lightning's ``LightningCLI`` (:class:`CatDogCLI`): ``--data.*``,
``--model.*`` and ``--trainer.*`` from the signatures of ``CatDogDataModule``, ``CatDogClassifier`` and
``lightning.Trainer``, so their docstrings are the help text. A run's ``config.yaml`` and a ``--config`` file are
checked against it like flags, and the classes they name (``model.net``, ``trainer.callbacks``,
``trainer.logger``) must come from an allowed module, checked before anything is imported: a settings file is
data, never code.
"""

from __future__ import annotations

import difflib
import re
from argparse import ArgumentError
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
from jsonargparse import ArgumentParser
from lightning.fabric.connector import _PRECISION_INPUT
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from ..allow_list import check_class_paths, class_paths
from ..data import CatDogDataModule
from ..errors import ConfigError
from ..models import CatDogClassifier
from ..storage.runs import DEFAULT_LOGS_DIR

DEFAULT_SEED = 42
# Our defaults where they differ from Lightning's (its max_epochs is 1000).
TRAINER_DEFAULTS: dict[str, Any] = {"max_epochs": 20, "accelerator": "auto", "devices": "auto"}
# Trainer arguments train() sets itself.
# (--trainer.callbacks and --trainer.logger add to ours: TensorBoard and the checkpoints are always there.)
TRAINER_OWNED = {"default_root_dir", "enable_checkpointing", "use_distributed_sampler"}


def new_parser(prog: str, description: str) -> ArgumentParser:
    """Errors come back to :func:`run_cli` as one line; no abbreviations (--trainer.max_epoch is a typo)."""
    return ArgumentParser(prog=prog, description=description, exit_on_error=False, allow_abbrev=False)


DESCRIPTION = (
    "Train the cat/dog classifier, then test its best checkpoint. With no flags: the built-in synthetic dataset. "
    "Runs go to lightning_logs/<run_name>/; watch: tensorboard --logdir lightning_logs"
)


class CatDogCLI(LightningCLI):
    """train.py's command line on Lightning's ``LightningCLI``.

    LightningCLI builds the parser: ``--data.*``, ``--model.*`` (the network by class_path) and ``--trainer.*``
    from the signatures of the DataModule, the LightningModule and ``lightning.Trainer`` (their docstrings are
    the help), ``--config`` and ``--print_config``, ``--seed_everything``, the trainer defaults, and the
    image-size link from the data to the model (``link_arguments``). The hooks below add what a run needs
    beyond that (resuming, its folder, the checks) and leave two things to ``train()``: seeding and building
    the classes, because a resumed run's saved settings (its config.yaml) decide both, and they are read only
    once the run is known.
    """

    def __init__(self, args: Sequence[str] = ()):
        super().__init__(
            CatDogClassifier,
            CatDogDataModule,
            save_config_callback=None,  # train() writes the run's config.yaml, resolved, inside its run folder
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=DEFAULT_SEED,
            parser_kwargs={
                "prog": "train.py",
                "description": DESCRIPTION,
                "exit_on_error": False,
                "allow_abbrev": False,
            },  # fmt: skip
            auto_configure_optimizers=False,  # the LightningModule configures its own
            load_from_checkpoint_support=False,  # checkpoints load through models.loading (the allow-list first)
            args=list(args),
            run=False,
        )

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--seed_everything", type=int, default=self.seed_everything_default, help="seed of weights and shuffling"
        )

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(CatDogDataModule, "data")
        parser.add_lightning_class_args(CatDogClassifier, "model")
        # The Trainer's, less what a run sets itself; precision also takes auto.
        parser.add_class_arguments(L.Trainer, "trainer", skip=TRAINER_OWNED | {"precision"}, fail_untyped=False,
                                   instantiate=False, sub_configs=True)  # fmt: skip
        parser.add_argument(
            "--trainer.precision",
            type=Literal["auto"] | _PRECISION_INPUT | None,
            default=None,
            help="Lightning's precision (32-true, bf16-mixed, 16-mixed, ...), or auto: bf16-mixed where this "
            "machine computes bf16 natively (AMX or AVX512-BF16 CPUs, GPUs with bf16), 32-true elsewhere "
            "(default: 32-true)",
        )
        parser.set_defaults({f"trainer.{k}": v for k, v in self.trainer_defaults.items()})

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.image_size", "model.image_size")  # the network's input is the data's
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
            "--allow_modules",
            type=list[str] | str,
            default=[],
            help="modules beyond Lightning and catdog_lightning whose classes a config file or a resumed run may "
            "name: one (mypackage) or a list ([mypackage, other]); given on the command line only, never read from "
            "a file",
        )
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
            "--best_by",
            type=Literal["val/acc", "val/loss"],
            default="val/acc",
            help="what makes best.ckpt (and early stopping) best: the highest val/acc, or the lowest val/loss (a "
            "steadier pick on a small validation split whose accuracy moves by whole photos)",
        )
        parser.add_argument(
            "--log_images",
            type=bool,
            default=True,
            help="TensorBoard pictures: validation predictions, confusion matrix, PR curve, model graph",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Sequence[str]) -> None:
        self.config = parser.parse_args(args)  # LightningCLI's, without its warning about sys.argv: args are given

    def _set_seed(self) -> None:
        """train() seeds each run itself, a resumed one with its saved seed."""

    def instantiate_classes(self) -> None:
        """train() builds the classes, once the run (a new one, or a resumed one's saved settings) is known."""


def settings_parser() -> ArgumentParser:
    """train.py's flags: a run's settings, and the checks a settings file (config.yaml, --config) goes through."""
    return CatDogCLI().parser


TYPE_WORDS = {"float": "a number", "int": "a whole number", "bool": "true or false", "str": "text"}


def one_line(exc: BaseException | str) -> str:
    """jsonargparse's error, in words and on one line: it speaks Python ("Expected a <class 'float'>. Got value:
    abc", "Does not validate against any of the Union subtypes ..."), users read flags and values."""
    text = " ".join(str(exc).split())
    text = text.replace('Parser key "', "--").replace('":', ":", 1) if text.startswith("Parser key") else text
    problem = re.search(r"Problem with given class_path '([\w.]+)': (.*?) - Expected a <class 'str'>", text)
    problem = problem or re.search(r"Problem with given class_path '([\w.]+)': (.*?) - ", text)
    if problem:  # a class named with what it needs missing: say that, not the Union's every other subtype
        flag, inner = text.split(":")[0], problem.group(2)
        if key := re.match(r'(?:Parser key "|--)([\w.]+)": (.*)', inner):  # one of its init_args
            return one_line(f'Parser key "{flag.removeprefix("--")}.init_args.{key.group(1)}": {key.group(2)}')
        if option := re.match(r"Option '(\w+)' is not accepted", inner):
            return f"{flag}.init_args.{option.group(1)}: not an argument of {problem.group(1)}"
        return f"{flag}: {problem.group(1)}: {inner}"
    union = re.search(r"Union subtypes Subtypes: \[(.*?)\].*Given value: (.*)$", text)
    subtypes = text.split(" Errors:")[0]
    if union and "typing.Literal[" in subtypes:  # choices, split over several Literals (Lightning's precision)
        found = [o.strip("'") for lit in re.findall(r"Literal\[(.*?)\]", subtypes) for o in lit.split(", ")]
        options = list(dict.fromkeys(found))
        got = union.group(2)
        return f"{text.split(':')[0]}: expected one of {', '.join(options)}; got {got}{did_you_mean(got, options)}"
    if union:
        kinds = [TYPE_WORDS.get(k, k) for k in re.findall(r"<class '(\w+)'>", union.group(1)) if k != "NoneType"]
        empty = " (or null)" if "NoneType" in union.group(1) else ""
        return f"{text.split(':')[0]}: expected {' or '.join(kinds) or 'another value'}{empty}, got {union.group(2)}"
    choices = re.search(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)$", text)
    if choices:
        options, got = re.findall(r"'([^']*)'", choices.group(1)), choices.group(2)
        return f"{text.split(':')[0]}: expected one of {', '.join(options)}; got {got}{did_you_mean(got, options)}"
    return re.sub(
        r"Expected a <class '(\w+)'>\. Got value: (.*)",
        lambda m: f"expected {TYPE_WORDS.get(m.group(1), m.group(1))}, got {m.group(2)}",
        text,
    )


# Settings that moved when the network became a parameter of its own (--model.net): the old name is one line
# naming the new one.
RENAMED = {
    "model.arch": "model.net",
    **{
        f"model.{name}": f"model.net.init_args.{name}"
        for name in ("hidden_dims", "activation", "dropout", "channels", "convs_per_block", "weights")
        + ("unfreeze_at_epoch", "backbone_lr_ratio", "finetune_blocks", "feature_precision")
    },
}


def did_you_mean(word: str, options) -> str:
    bare = word.removeprefix("--")
    if bare in RENAMED:
        dashes = "--" if word.startswith("--") else ""
        return f" (renamed: now {dashes}{RENAMED[bare]}; see docs/your-network.md)"
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def known_settings(parser: ArgumentParser) -> set[str]:
    """Every setting the parser takes, dotted (data.batch_size, trainer.max_epochs, seed_everything...)."""
    return {action.dest for action in parser._actions if action.dest not in ("help", "config")}


def unknown_settings(settings: dict, known: set[str]) -> list[str]:
    """The dotted keys of a --config file's mapping that are not settings, each with a suggestion."""
    groups = {name.split(".")[0] for name in known if "." in name}
    keys = []
    for key, value in settings.items():
        if key in groups and isinstance(value, dict):
            keys += [f"{key}.{sub}" for sub in value]
        else:
            keys.append(str(key))
    return [key + did_you_mean(key, known) for key in keys if key not in known]


# What a run's config.yaml holds (train() writes exactly these).
SAVED_KEYS = (
    "data",
    "model",
    "trainer",
    "seed_everything",
    "checkpoint_every_n_steps",
    "log_images",
    "early_stopping_patience",
    "test_checkpoint",
    "best_by",
    "run_name",
)
# Settings that name classes to build.
BUILT = ("model.net", "trainer.callbacks", "trainer.logger")
SETTING_GROUPS = ("data", "model", "trainer")


def check_built_only(settings: object, source: str) -> None:
    """Only model.net, trainer.callbacks and trainer.logger build classes from settings (a profiler, a plugin or
    a strategy named by class_path would reach Lightning as a mapping it cannot use)."""
    for key, path in class_paths(settings):
        if not key.startswith(BUILT):
            raise ConfigError(
                f"{source}: {key} names a class ({path}); only model.net, trainer.callbacks and trainer.logger name "
                "classes here: give that setting by its plain value (e.g. --trainer.profiler simple)."
            )


def check_no_file_references(settings: object, source: str) -> None:
    """A group inside a settings file is its settings, never the name of another file (``trainer: other.yaml``):
    jsonargparse would read that one without our limits or checks."""
    if not isinstance(settings, dict):
        return
    for group in SETTING_GROUPS:
        if group in settings and not isinstance(settings[group], dict | None):
            raise ConfigError(
                f"{source}: {group} must hold its settings (a mapping), not {settings[group]!r}; a settings file "
                "names no other file: give that file with --config on the command line."
            )


def check_settings_file(settings: dict, source: str, allowed: tuple[str, ...] = ()) -> None:
    """A run's saved settings checked like flags: known keys only, allowed classes only, values of the right
    type and range (one :class:`ConfigError` naming ``source`` and the key)."""
    unknown = [key for key in settings if key not in SAVED_KEYS]
    if unknown:
        raise ConfigError(f"{source}: {unknown[0]} is not a setting a run records; remove it from the file.")
    check_class_paths(settings, source, allowed)
    check_built_only(settings, source)
    check_no_file_references(settings, source)
    # The classes are built, and checked again, by the Trainer's setup (training/trainer.py: instantiate).
    plain = dict(settings)
    if isinstance(plain.get("trainer"), dict):
        plain["trainer"] = {k: v for k, v in plain["trainer"].items() if f"trainer.{k}" not in BUILT}
    try:
        settings_parser().parse_object(plain, defaults=False)
    except ArgumentError as exc:
        raise ConfigError(f"{source}: {one_line(exc).removeprefix('--')}") from None
