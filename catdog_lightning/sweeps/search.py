"""A search-space file: which train.py flags a sweep tries, and over which values.

    objective: val/acc            # what the sweep maximises: each trial's best val/acc (val/loss: minimised)
    pruning: {warmup_epochs: 10}  # optional: Optuna's median pruner waits this long (and for startup_trials)
    parameters:
      model.lr: {low: 1.0e-3, high: 3.0e-2, log: true}    # a range (log scale)
      trainer.max_epochs: {low: 30, high: 70, step: 10}   # whole numbers when low and high are
      data.image_size: [64, 80, 96]                       # a list: one of these

Every key is a train.py flag and every value is checked against it before the first trial, so a typo or an
empty range is one line, not a failed trial an hour later.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError, reason
from ..storage.yaml_files import read_yaml_file
from ..training.fit import check_settings
from ..training.settings import check_class_paths

OBJECTIVES = {"val/acc": "maximize", "val/loss": "minimize"}
RANGE_KEYS = {"low", "high", "log", "step"}
# Optuna's median pruner: a trial stops when, past warmup_epochs, its objective is worse than the median of the
# trials before it at the same epoch; not before startup_trials trials have finished.
PRUNING = {"warmup_epochs": 3, "startup_trials": 3}


# Flags a search file may not set: what lets code in (allow_modules), names other files, or is the sweep's own.
NOT_SEARCHED = ("allow_modules", "config", "data", "model", "trainer", "run_name", "logs_dir", "ckpt_path", "best_by")


def read_search_space(path: str | Path, parse, allowed: tuple[str, ...] = ()) -> tuple[str, dict, dict]:
    """``(objective, parameters, pruning)`` from the file at ``path``; ``parse(argv)`` is train.py's flag parser,
    used to check each flag with a value from its range. A class it names must come from an allowed module
    (``allowed``: the command line's --allow_modules), checked before anything is imported."""
    spec = read_yaml_file(path)
    check_class_paths(spec, f"--search {path}", allowed)
    if not isinstance(spec, dict) or not isinstance(spec.get("parameters"), dict) or not spec["parameters"]:
        raise ConfigError(f"--search {path}: give a mapping with 'parameters:' (flag: range or choices).")
    unknown = set(spec) - {"objective", "parameters", "pruning"}
    if unknown:
        keys = "objective, parameters, pruning"
        raise ConfigError(f"--search {path}: unknown key {sorted(unknown)[0]!r}; the file holds {keys}.")
    pruning = {**PRUNING, **(spec.get("pruning") or {})}
    if set(pruning) != set(PRUNING) or not all(isinstance(v, int) and v >= 0 for v in pruning.values()):
        raise ConfigError(f"--search {path}: pruning takes whole numbers {' and '.join(PRUNING)}.")
    objective = spec.get("objective", "val/acc")
    if objective not in OBJECTIVES:
        raise ConfigError(f"--search {path}: objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}.")
    parameters = {}
    for flag in spec["parameters"]:
        if str(flag) in NOT_SEARCHED:
            raise ConfigError(f"--search {path}: {flag} is not searched; give it on the command line, if at all.")
    for flag, value in spec["parameters"].items():
        parameters[flag] = _parameter(path, str(flag), value)
        for example in _examples(parameters[flag]):
            try:
                check_settings(parse(as_flags({flag: example})))  # its type, then its range, as a run checks them
            except Exception as exc:  # noqa: BLE001 (jsonargparse's or our own refusal, said in one line below)
                why = reason(exc, 200)
                raise ConfigError(f"--search {path}: {flag} = {example!r}: not a train.py setting ({why})") from None
    return objective, parameters, pruning


def _parameter(path, flag: str, value) -> dict:
    where = f"--search {path}: {flag}"
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: an empty list of choices; give at least one value.")
        return {"choices": value}
    if not isinstance(value, dict) or not {"low", "high"} <= set(value) or set(value) - RANGE_KEYS:
        raise ConfigError(f"{where}: give a list of choices or {{low, high}} (and optionally log, step).")
    low, high = value["low"], value["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"{where}: low and high must be numbers, got {low!r} and {high!r}.")
    if not low < high:
        raise ConfigError(f"{where}: an empty range (low {low} is not below high {high}).")
    if value.get("log") and low <= 0:
        raise ConfigError(f"{where}: a log range needs low above 0, got {low}.")
    step = value.get("step")
    if step is not None:  # Optuna's own rules, checked before the first trial rather than inside it
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
            raise ConfigError(f"{where}: step must be a number above 0, got {step!r}.")
        if value.get("log"):
            raise ConfigError(f"{where}: give log or step, not both (Optuna samples a log range without steps).")
    integer = all(isinstance(v, int) for v in (low, high, value.get("step", 1)))
    return {"low": low, "high": high, "log": bool(value.get("log", False)), "step": value.get("step"), "int": integer}


def _examples(parameter: dict) -> list:
    return parameter["choices"] if "choices" in parameter else [parameter["low"], parameter["high"]]


def _stored(choice):
    """Optuna stores plain values only: a list choice (hidden_dims [256, 64]) is kept as its JSON text."""
    return choice if choice is None or isinstance(choice, (bool, int, float, str)) else json.dumps(choice)


def values_of(params: dict, parameters: dict) -> dict:
    """A trial's stored params as the flags' values (a list choice's JSON text back to the list)."""
    out = {}
    for flag, value in params.items():
        choices = parameters.get(flag, {}).get("choices")
        out[flag] = next((c for c in choices if _stored(c) == value), value) if choices else value
    return out


def suggest(trial, parameters: dict) -> dict:
    """One value per flag, drawn by Optuna's sampler."""
    values = {}
    for flag, p in parameters.items():
        if "choices" in p:
            stored = trial.suggest_categorical(flag, [_stored(c) for c in p["choices"]])
            values[flag] = next(c for c in p["choices"] if _stored(c) == stored)
        elif p["int"]:
            values[flag] = trial.suggest_int(flag, p["low"], p["high"], step=p["step"] or 1, log=p["log"])
        else:
            values[flag] = trial.suggest_float(flag, p["low"], p["high"], step=p["step"], log=p["log"])
    return values


def as_flags(values: dict) -> list[str]:
    """Command-line tokens: text as it is (``adam``, not ``"adam"``), everything else as JSON."""
    return [token for flag, v in values.items() for token in (f"--{flag}", v if isinstance(v, str) else json.dumps(v))]


def nested(values: dict) -> dict:
    """``{"model.lr": 0.01}`` -> ``{"model": {"lr": 0.01}}``: the shape of a --config file."""
    out: dict = {}
    for flag, value in values.items():
        *sections, key = flag.split(".")
        target = out
        for section in sections:
            target = target.setdefault(section, {})
        target[key] = value
    return out
