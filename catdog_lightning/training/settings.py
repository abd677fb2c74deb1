"""A run's settings: their schema, and the checks a settings file goes through before anything uses it.

The schema is train.py's flags, built by Lightning's ``LightningCLI`` (:class:`CatDogCLI`): ``--data.*``,
``--model.*`` and ``--trainer.*`` from the signatures of ``CatDogDataModule``, ``CatDogClassifier`` and
``lightning.Trainer``, so their docstrings are the help text. A run's ``config.yaml`` and a ``--config`` file are
checked against it like flags, and the classes they name (``model.net``, ``trainer.callbacks``,
``trainer.logger``) must come from an allowed module, checked before anything is imported: a settings file is
data, never code.
"""

from __future__ import annotations

import copy
import difflib
import re
import sys
from argparse import ArgumentError
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
from jsonargparse import ArgumentParser, Namespace
from lightning.fabric.connector import _PRECISION_INPUT
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from ..allow_list import check_class_paths, class_paths
from ..data import CatDogDataModule
from ..errors import ConfigError
from ..models import CatDogClassifier
from ..models.nets import SHORT_NAMES, expand
from ..storage.runs import DEFAULT_LOGS_DIR
from ..storage.yaml_files import load_yaml, read_yaml_file

DEFAULT_SEED = 42
SETTING_GROUPS = ("data", "model", "trainer")
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


# (DataModule setting or attribute, LightningModule argument, when jsonargparse applies it): the network's input
# size is the data's setting; the classes are the DataModule's (train/'s class folders), known once it exists.
# train() applies the same links where it builds the two (training.fit.data_and_model).
LINKS = (("image_size", "image_size", "parse"), ("class_names", "class_names", "instantiate"))


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
        for source, target, when in LINKS:  # what the model takes from the data, never set by hand
            parser.link_arguments(f"data.{source}", f"model.{target}", apply_on=when)
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
            help="modules beyond Lightning and catdog_lightning whose classes (a --model.net of your own, callbacks, "
            "loggers) a flag, a config file, a resumed run or its checkpoint may name: one (mypackage) or a list "
            "([mypackage, other]); given on the command line only, never read from a file",
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
        """LightningCLI's parse (every value checked, the links applied, ``--help`` and ``--print_config``
        answered), with the checks of :func:`parse_checked` around it; ``self.given`` holds only the settings a
        flag or a file names, so a resumed run keeps its saved settings unless one is named again."""
        self.config, self.given = parse_checked(parser, args)

    def _set_seed(self) -> None:
        """train() seeds each run itself, a resumed one with its saved seed."""

    def instantiate_classes(self) -> None:
        """train() builds the classes, once the run (a new one, or a resumed one's saved settings) is known."""


NOT_SETTINGS = ("config", "print_config", "help", "allow_modules", *SETTING_GROUPS)


def parse_checked(parser: ArgumentParser, args: Sequence[str] | None) -> tuple[Namespace, dict]:
    """``parser``'s parse of ``args``, and the settings they name, with what a run needs around the parse: a short
    network name expanded; every settings file read with limits and every class it names checked against the
    allow-list before jsonargparse imports it; an unknown flag named with a suggestion."""
    argv = expand_net_names(list(sys.argv[1:] if args is None else args))
    allowed = flag_values(argv, "--allow_modules")
    allowed = tuple(str(m) for value in allowed for m in (value if isinstance(value, list) else [value]))
    known = known_settings(parser)
    for flag in ("--model.net", "--model.net.class_path"):  # a network named on the command line: the same gate
        for value in flag_values(argv, flag):
            check_class_paths({"model": {"net": value if isinstance(value, dict) else {"class_path": value}}}, flag,
                              allowed)  # fmt: skip
    files = []
    # Every settings file and inline value is read here, with limits, and checked before jsonargparse sees it (it
    # would import a class_path's module to check its type): --config, and a group given whole (--trainer FILE).
    for flag in ("--config", *(f"--{group}" for group in SETTING_GROUPS)):
        for value in flag_values(argv, flag):
            source = value if isinstance(value, str) and Path(value).is_file() else flag
            settings = read_yaml_file(value) if source != flag else value
            if flag != "--config":
                settings = {flag[2:]: settings}
            check_class_paths(settings, source, allowed)
            check_built_only(settings, source)
            check_no_file_references(settings, source)
            files.append(settings)
            unknown = unknown_settings(settings, known) if isinstance(settings, dict) else []
            if unknown:
                raise ConfigError(f"{source}: not settings of {parser.prog}: {', '.join(unknown)}.")
    try:
        parsed = parser.parse_args(argv)  # validates every value, and handles --help / --print_config
    except ArgumentError as exc:
        flags = re.fullmatch(r"unrecognized arguments: (.*)", " ".join(str(exc).split()))
        if not flags:
            raise
        named = [token.split("=")[0] for token in flags.group(1).split() if token.startswith("--")]
        options = [f"--{name}" for name in known]
        hints = [flag + did_you_mean(flag, options) for flag in named] or [flags.group(1)]
        raise ArgumentError(None, f"unknown flag {', '.join(hints)}") from None
    given = named_settings(parsed.as_dict(), [*flag_names(argv), *(name for s in files for name in dotted_names(s))])
    given.pop("allow_modules", None)  # from the command line alone: a file never allows code for itself
    if allowed:
        given["allow_modules"] = list(allowed)
    if "logs_dir" in parsed:
        given["logs_dir"] = parsed.logs_dir
    return parsed, given


def flag_names(argv: Sequence[str]) -> list[str]:
    """The settings ``argv``'s flags name, dotted: ``--model.net.init_args.dropout=0.1`` names
    model.net.init_args.dropout."""
    names = [token[2:].split("=")[0].rstrip("+") for token in argv if token.startswith("--")]
    return [name for name in names if name not in NOT_SETTINGS and not name.endswith(".help")]


def dotted_names(settings: object, prefix: str = "") -> list[str]:
    """The settings a settings file names, dotted, down to each value (a network's class_path and each init_arg)."""
    if not isinstance(settings, dict) or not settings:
        return [prefix] if prefix else []
    return [name for key, value in settings.items() for name in dotted_names(value, f"{prefix}.{key}".lstrip("."))]


def named_settings(parsed: dict, names: Sequence[str]) -> dict:
    """The parsed values of the settings ``names`` names, nested as the parse nests them."""
    given: dict = {}
    for name in names:
        keys, value = name.split("."), parsed
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            target = given
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = copy.deepcopy(value)
    return given


def expand_net_names(argv: list[str]) -> list[str]:
    """``--model.net cnn`` (a short name) as its class_path, and a backbone's name as its init_args.arch, so that
    ``--model.net.init_args.*`` flags may follow it as they follow any class_path."""
    out, tokens = [], list(argv)
    while tokens:
        token = tokens.pop(0)
        name, eq, value = token.partition("=")
        if name in ("--model.net", "--model.net.help") and not eq and tokens:
            value = tokens.pop(0)
        elif name not in ("--model.net", "--model.net.help") or not eq:
            out.append(token)
            continue
        if value not in SHORT_NAMES:
            out += [name, value]
            continue
        spec = expand(value)
        out += [name, spec["class_path"]]
        if name == "--model.net.help":
            continue
        for key, setting in spec["init_args"].items():
            out += [f"--model.net.init_args.{key}", str(setting)]
    return out


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
