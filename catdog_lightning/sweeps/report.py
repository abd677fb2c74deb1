"""What a sweep found: a table of its trials, the best one as a ready ``--config`` recipe, and Optuna's pictures
(optimisation history, parameter importances, the objective against each parameter) as PNG files and in
TensorBoard, beside the trials' own runs."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import yaml

from ..storage.atomic import atomic_write, atomic_write_text
from .search import nested, values_of

# Settings a recipe leaves to whoever uses it: where the photos, caches and runs are.
NOT_IN_A_RECIPE = {("data", "data_dir"), ("data", "cache_dir"), ("logs_dir",), ("run_name",), ("allow_modules",)}


def recipe(base: dict, best_params: dict) -> dict:
    """The sweep's shared flags (its --config file included) with the best trial's values on top."""
    out = json.loads(json.dumps(base))
    for path in NOT_IN_A_RECIPE:
        section = out
        for key in path[:-1]:
            section = section.get(key, {})
        section.pop(path[-1], None)
    for section, values in nested(best_params).items():
        if isinstance(values, dict):
            out.setdefault(section, {}).update(values)
        else:
            out[section] = values
    return {k: v for k, v in out.items() if v != {}}


def trial_table(study, objective: str) -> str:
    rows = [f"{'trial':>5}  {'state':<8}  {objective:>9}  {'minutes':>7}  values"]
    for trial in study.trials:
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        minutes = f"{trial.duration.total_seconds() / 60:.1f}" if trial.duration else "-"
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        rows.append(f"{trial.number:>5}  {trial.state.name:<8}  {value:>9}  {minutes:>7}  {values}")
    return "\n".join(rows)


def pruning_saving(study, max_epochs: int) -> tuple[float, float, float]:
    """Seconds the finished trials took; what they would have taken run to their last epoch (a pruned trial's
    time scaled by its epochs, Optuna's steps, against its ``trainer.max_epochs``); and seconds in failed
    trials (a killed worker's, counted until a worker found its heartbeat stale; its retry resumes its run)."""
    import optuna

    spent = full = failed = 0.0
    for trial in study.trials:
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        if trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
            spent += seconds
            full += seconds * trial.params.get("trainer.max_epochs", max_epochs) / (max(trial.intermediate_values) + 1)
        elif trial.state == optuna.trial.TrialState.COMPLETE:
            spent += seconds
            full += seconds
        elif trial.state == optuna.trial.TrialState.FAIL:
            failed += seconds
    return spent, full, failed


def pictures(study, folder: Path) -> dict[Path, bytes]:
    """Optuna's matplotlib pictures of the study (those it can draw with the trials there are), each written as a
    PNG file and returned as its bytes. Workers sharing a study redraw the same files: each is renamed into place
    whole, and a worker logs what it drew, never a file another worker is writing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    written = {}
    for name, draw in (
        ("history", optuna_plots.plot_optimization_history),
        ("importances", optuna_plots.plot_param_importances),
        ("slice", optuna_plots.plot_slice),
    ):
        try:
            with warnings.catch_warnings():  # Optuna marks its matplotlib module experimental
                warnings.simplefilter("ignore")
                axes = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError):  # too few finished trials to draw this one
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        figure.set_size_inches(max(8, figure.get_size_inches()[0]), 5)
        png = io.BytesIO()
        figure.savefig(png, format="png", dpi=90, bbox_inches="tight")
        plt.close(figure)
        path, data = folder / f"{name}.png", png.getvalue()
        atomic_write(path, lambda fh, data=data: fh.write(data))
        written[path] = data
    return written


def to_tensorboard(pictures: dict[Path, bytes], folder: Path) -> None:
    """The pictures (PNG bytes by file) as TensorBoard images (tag sweep/<name>), beside the trials' runs under
    the same logdir."""
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for path, png in pictures.items():
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        writer.add_image(f"sweep/{path.stem}", pixels, 0, dataformats="HWC")
    writer.close()


def report(study, name: str, objective: str, space: dict, base_argv: list[str], logs_dir: str, parse) -> dict:
    """Print the table, write best.yaml and the pictures into ``<logs_dir>/<study>-sweep/``; the recipe's path
    is the last line printed."""
    import optuna

    folder = Path(logs_dir) / f"{name}-sweep"
    folder.mkdir(parents=True, exist_ok=True)
    print(trial_table(study, objective))
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    counts = {state.name: len(study.get_trials(deepcopy=False, states=(state,))) for state in optuna.trial.TrialState}
    print(", ".join(f"{n} {state.lower()}" for state, n in counts.items() if n))
    if not done:
        raise_no_result(name)
    best = study.best_trial
    pictures_written = pictures(study, folder)
    to_tensorboard(pictures_written, folder)
    base = parse(base_argv)
    spent, full, failed = pruning_saving(study, base["trainer"]["max_epochs"])
    print(f"time: {spent / 60:.1f} min of finished trials; run to their last epoch ~{full / 60:.1f} min (pruning "
          f"saved {full / spent:.2f}x)" + (f"; {failed / 60:.1f} min in failed trials" if failed else ""))  # fmt: skip
    found = recipe(base, values_of(best.params, space))
    header = (
        f"# Found by scripts/sweep.py, study {name}: trial {best.number} of {len(study.trials)}, "
        f"{objective} {best.value:.4f} (its run: {best.user_attrs.get('run_dir', '?')}).\n"
        f"#   python scripts/train.py --config {folder / 'best.yaml'} --data.data_dir PHOTOS\n"
    )
    path = folder / "best.yaml"
    atomic_write_text(path, header + yaml.safe_dump(found, sort_keys=False))
    print(f"pictures: {', '.join(str(p) for p in pictures_written) or 'none yet (too few finished trials)'}")
    print(f"best trial {best.number}: {objective} {best.value:.4f}; its recipe:")
    print(path)
    return {"best_trial": best.number, "best_value": best.value, "recipe": str(path), "counts": counts}


def raise_no_result(name: str) -> None:
    from ..errors import UserError

    raise UserError(
        f"study {name} has no completed trial: each was refused or pruned (see the lines above); check the flags "
        f"every trial gets and the search file's ranges, or run sweep.py again with --study_name {name}."
    )
