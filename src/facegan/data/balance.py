"""`--balance`: per-image sampling weights that draw each group (skin-tone band or attribute value) about
equally often, capped so that a tiny group is not repeated endlessly.

Uniform sampling draws an image with weight 1. Balanced, an image of group g (n_g of N images, K groups
present) gets N / (K * n_g): every group then fills 1/K of the draws. The cap keeps that weight at most
`max_weight`; a capped group gets fewer than 1/K of the draws and the others share the rest.
"""

from __future__ import annotations

import numpy as np

from ..errors import FaceganError


def balance_weights(labels: np.ndarray, names: list[str], max_weight: float,
                    what: str = "--balance") -> tuple[np.ndarray, str]:
    """(float64 weight per image, one line saying what the balancing does) for group `labels` (N,)."""
    counts = np.bincount(labels, minlength=len(names))
    present = np.nonzero(counts)[0]
    if len(present) < 2:
        only = names[int(present[0])] if len(present) else "none"
        raise FaceganError(f"{what}: every image is in one group ({only}), so there is nothing to balance: "
                           f"drop {what}, or add images of other groups")
    per_group = np.zeros(len(names))
    per_group[present] = np.minimum(len(labels) / (len(present) * counts[present]), max_weight)
    weights = per_group[labels]
    draws = per_group * counts / weights.sum()  # each group's share of the draws
    capped = [int(g) for g in present if per_group[g] == max_weight and len(labels) / (len(present) * counts[g])
              > max_weight]
    line = f"{what}: draws per group " + ", ".join(f"{names[g]} {draws[g]:.0%} (was {counts[g] / len(labels):.0%})"
                                                     for g in present)
    if capped:
        line += ("; capped at --balance-max-weight " + f"{max_weight:g}x: "
                 + ", ".join(f"{names[g]} ({counts[g]} images)" for g in capped)
                 + " would need more repeats, so get less than an equal share")
    return weights, line


def training_weights(data, prepared, log=print) -> np.ndarray | None:
    """The sampling weights of a run's prepared images for data.balance (None when it is off), said in one line."""
    if not data.balance:
        return None
    from .audit import group_labels

    labels, names = group_labels(data, prepared)
    weights, line = balance_weights(labels, names, data.balance_max_weight, what=f"--balance {data.balance}")
    log(line)
    return weights
