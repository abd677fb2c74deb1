"""Learning-rate schedules, and what happens to one when a resumed run trains further.

``cosine`` anneals per epoch to 0 at ``max_epochs``; ``onecycle`` warms up and anneals per step over all
of the run's steps. Both are planned for a horizon. When a run is resumed with another horizon (``--ckpt_path
last --trainer.max_epochs 40`` after 20), the schedule restored from the checkpoint would be wrong: one-cycle
raises (it cannot step past its plan), cosine climbs back up after reaching 0. The rule here: **the schedule
becomes the one a run planned for the new horizon follows, from the current step on** (the same curve, longer;
after a finished cosine that means the rate rises again to where the longer plan is at this epoch). It is
announced in one line, and it is what a run started with the new horizon would do from here.
"""

from __future__ import annotations

import warnings

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR

INTERVAL = {"cosine": "epoch", "onecycle": "step"}


def horizon(kind: str, trainer) -> int:
    """Epochs (cosine) or steps (one-cycle) the schedule spans in this run."""
    return max(1, int(trainer.max_epochs if kind == "cosine" else trainer.estimated_stepping_batches))


def position(kind: str, trainer) -> int:
    return int(trainer.current_epoch if kind == "cosine" else trainer.global_step)


def build(kind: str, optimizer: torch.optim.Optimizer, lr: float, length: int) -> LRScheduler:
    if kind == "cosine":
        return CosineAnnealingLR(optimizer, T_max=length)
    return OneCycleLR(optimizer, max_lr=lr, total_steps=length)


def planned_length(kind: str, schedule: LRScheduler) -> int:
    return int(schedule.T_max if kind == "cosine" else schedule.total_steps)


def replan(kind: str, optimizer: torch.optim.Optimizer, lr: float, length: int, at: int) -> LRScheduler:
    """A schedule planned for ``length``, moved on to ``at`` with the optimiser's rates set to its rate there."""
    groups = optimizer.param_groups
    for group in groups:  # the new plan starts from the configured rate, as a fresh run's would
        group.pop("initial_lr", None)
        group["lr"] = lr
    schedule = build(kind, optimizer, lr, length)
    schedule.last_epoch = at
    if kind == "cosine":
        rates = schedule._get_closed_form_lr()
    else:
        with warnings.catch_warnings():  # torch asks for get_last_lr() outside step(); this is a one-off jump
            warnings.simplefilter("ignore", UserWarning)
            rates = schedule.get_lr()  # closed form; also sets the matching momentum
    for group, rate in zip(groups, rates, strict=False):
        group["lr"] = rate
    schedule._last_lr = [group["lr"] for group in groups]
    return schedule
