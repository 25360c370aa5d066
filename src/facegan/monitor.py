"""Failure alerts during training: NaN/inf losses, a discriminator that wins outright, and samples
that lose diversity (mode collapse). Each returns messages; the loop logs and prints them."""

from __future__ import annotations

import math


def d_loss_floor(loss: str, real_label: float) -> float:
    """The lowest D loss a perfect discriminator reaches (label smoothing lifts it above 0 for BCE)."""
    if loss == "bce" and real_label < 1.0:
        return -(real_label * math.log(real_label) + (1 - real_label) * math.log(1 - real_label))
    return 0.0


class Monitor:
    def __init__(self, loss: str, real_label: float, repeat_after: int = 10):
        self.floor = d_loss_floor(loss, real_label)
        self.repeat_after = repeat_after  # log windows before the same alert is raised again
        self._quiet_until: dict[str, int] = {}
        self._window = 0
        self.previous_diversity: float | None = None

    def _once(self, kind: str, message: str) -> list[str]:
        if self._window < self._quiet_until.get(kind, 0):
            return []
        self._quiet_until[kind] = self._window + self.repeat_after
        return [message]

    def check_losses(self, row: dict) -> list[str]:
        self._window += 1
        if not all(math.isfinite(row[k]) for k in ("loss_d", "loss_g", "d_real", "d_fake")):
            return self._once("nan", f"losses became NaN or infinite at step {row['step']}: lower --lr-d/--lr-g "
                                     f"or try --loss lsgan; resume from the last good checkpoint")
        if row["loss_d"] < self.floor + 0.01:
            return self._once("d_wins", f"discriminator loss collapsed to its floor ({row['loss_d']:.3f}) at step "
                                        f"{row['step']}: D wins outright and G learns little; try --lr-d lower than "
                                        f"--lr-g, --label-smoothing 0.9, or --dropout 0.3")
        return []

    def check_diversity(self, samples_msssim: float, reals_msssim: float, step: int) -> list[str]:
        """Samples far more alike than real faces, and getting more so: likely mode collapse.

        A fresh generator's samples are all alike too; only diversity that existed and was then
        lost (a sharp rise since the previous check) counts."""
        previous, self.previous_diversity = self.previous_diversity, samples_msssim
        rising = previous is not None and samples_msssim - previous > 0.1
        if samples_msssim > reals_msssim + 0.2 and rising:
            return self._once("collapse", f"samples are losing diversity at step {step} (MS-SSIM {samples_msssim:.2f} "
                                          f"vs {reals_msssim:.2f} for real faces): possible mode collapse; compare "
                                          f"the sample grids, and consider resuming an earlier checkpoint")
        return []
