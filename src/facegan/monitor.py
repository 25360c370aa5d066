"""Failure alerts during training: NaN/inf losses, a discriminator that wins outright, and samples
that lose diversity (mode collapse). Each returns messages; the loop logs and prints them."""

from __future__ import annotations

import math

# Samples whose MS-SSIM is this far above the real faces' are "far more alike than real faces".
COLLAPSE_MARGIN = 0.2
# What to try when the generator never leaves collapse (docs/findings.md, "Leaving mode collapse").
COLLAPSE_REMEDIES = ("more instance noise for longer (--instance-noise 0.8 --instance-noise-steps 2000), "
                     "or a lower --lr-d than --lr-g")


class Monitor:
    def __init__(self, loss=None, repeat_after: int = 10, collapse_patience: int = 2, diversity=None):
        # `loss` is the run's losses.GANLoss: it knows where its D "wins outright" (None: no such alert);
        # `diversity(images, pairs)` is the MS-SSIM measure that check_samples uses (metrics/msssim.py)
        self.floor = loss.d_loss_floor() if loss is not None else None
        self.diversity = diversity
        self.repeat_after = repeat_after  # log windows before the same alert is raised again
        self.collapse_patience = collapse_patience  # diversity checks in collapse from the start before an alert
        self._quiet_until: dict[str, int] = {}
        self._window = 0
        self.previous_diversity: float | None = None
        self._checks_in_collapse = 0  # consecutive diversity checks in the collapse band, from the start
        self._ever_diverse = False
        self.reals_diversity: float | None = None  # MS-SSIM among real faces: the collapse check's yardstick

    def check_samples(self, samples, first_reals, step: int) -> tuple[dict | None, list[str]]:
        """(metrics row, alerts) of the diversity of a progress grid's samples, uint8 (N, S, S, 3),
        against that of real faces (`first_reals()`, asked once). Diversity needs two samples and two
        real faces to compare (a one-image data set has one): with fewer, nothing is checked."""
        diversity = self.diversity
        if diversity is None or len(samples) < 2:
            return None, []
        if self.reals_diversity is None:
            reals = first_reals()
            if len(reals) < 2:
                return None, []
            self.reals_diversity = diversity(reals, pairs=256)
        value = diversity(samples, pairs=256)
        row = {"step": step, "samples_msssim": round(value, 4), "reals_msssim": round(self.reals_diversity, 4)}
        return row, self.check_diversity(value, self.reals_diversity, step)

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
        if self.floor is not None and row["loss_d"] < self.floor + 0.01:
            return self._once("d_wins", f"discriminator loss collapsed to its floor ({row['loss_d']:.3f}) at step "
                                        f"{row['step']}: D wins outright and G learns little; try --lr-d lower than "
                                        f"--lr-g, --real-label 0.9 (bce), or --dropout 0.3")
        return []

    def check_diversity(self, samples_msssim: float, reals_msssim: float, step: int) -> list[str]:
        """Mode collapse, in either of its two forms:

        - lost: samples far more alike than real faces and getting more so (a sharp rise since the
          previous check) after they had been diverse;
        - never left: samples far more alike than real faces at every check so far, more than
          `collapse_patience` of them. A fresh generator's samples are all alike, so a few such
          checks say nothing (a 64x64 run is still leaving collapse at its second epoch); a
          generator still there after more is stuck, not slow."""
        previous, self.previous_diversity = self.previous_diversity, samples_msssim
        in_collapse = samples_msssim > reals_msssim + COLLAPSE_MARGIN
        self._ever_diverse = self._ever_diverse or not in_collapse
        self._checks_in_collapse = self._checks_in_collapse + 1 if in_collapse else 0
        rising = previous is not None and samples_msssim - previous > 0.1
        if in_collapse and rising and self._ever_diverse:
            return self._once("collapse", f"samples are losing diversity at step {step} (MS-SSIM {samples_msssim:.2f} "
                                          f"vs {reals_msssim:.2f} for real faces): possible mode collapse; compare "
                                          f"the sample grids, and consider resuming an earlier checkpoint")
        if not self._ever_diverse and self._checks_in_collapse == self.collapse_patience + 1:
            return [f"samples have been far more alike than real faces since the start ({self._checks_in_collapse} "
                    f"checks, now MS-SSIM {samples_msssim:.2f} vs {reals_msssim:.2f} at step {step}): the generator "
                    f"has not left mode collapse; look at the sample grids, and try {COLLAPSE_REMEDIES}"]
        return []
