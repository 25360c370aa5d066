"""When a run does what, in steps: the length of its learning-rate plan, and how many epochs lie
between its epoch-end saves."""

from __future__ import annotations

import math

# Fewest steps between epoch-end saves in a long run of tiny epochs (see epochs_per_save).
SAVE_MIN_STEPS = 200


def epochs_per_save(cfg, steps_per_epoch: int) -> int:
    """Epochs between epoch-end saves (progress grid, epoch checkpoint, loss plot). Every epoch by
    default; but 500 faces make an epoch of 7 steps, and writing all that 890 times in a 400k-image
    run took ten times longer than the training (150 images/s instead of 1,500 on 2 cores), so a run
    of more than 20 such epochs saves every SAVE_MIN_STEPS steps or so. The last epoch is always saved."""
    if cfg.save_every_epochs:
        return cfg.save_every_epochs
    if steps_per_epoch >= SAVE_MIN_STEPS or cfg.epochs <= 20:
        return 1
    return math.ceil(SAVE_MIN_STEPS / steps_per_epoch)


def planned_steps(cfg, steps_per_epoch: int) -> int:
    """The learning-rate schedule's length (optim.py): a killed run resumes on the same plan, exactly;
    resuming with other --epochs/--max-steps re-plans the rest of the schedule (and says so)."""
    planned = cfg.epochs * steps_per_epoch
    return min(planned, cfg.max_steps) if cfg.max_steps else planned
