"""TensorBoard logging (`--tensorboard`, the optional extra facegan[tensorboard]): the metrics.jsonl
rows as scalars and the progress grids as images, in RUN/tensorboard. metrics.jsonl stays the record;
this is a second view of it for people whose habit is `tensorboard --logdir runs`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import FaceganError

# metrics.jsonl key -> TensorBoard tag; grouped by prefix into TensorBoard's sections
_SCALAR_TAGS = {"loss_d": "loss/discriminator", "loss_g": "loss/generator", "d_real": "D/real (D(x))",
                "d_fake": "D/fake (D(G(z)))", "images_per_s": "speed/images_per_s",
                "samples_msssim": "diversity/samples MS-SSIM", "reals_msssim": "diversity/reals MS-SSIM"}


class TensorBoardLog:
    def __init__(self, folder: Path, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise FaceganError("--tensorboard needs the tensorboard package: pip install 'facegan[tensorboard]' "
                               "(or drop --tensorboard)") from None
        # purge_step: on resume, TensorBoard hides events logged after the checkpoint by the killed run
        self.writer = SummaryWriter(str(folder), purge_step=purge_step)

    def add_row(self, row: dict) -> None:
        """One metrics.jsonl row: its known scalars, and an evaluation's results under eval/."""
        step = row["step"]
        for key, tag in _SCALAR_TAGS.items():
            if isinstance(row.get(key), (int, float)):
                self.writer.add_scalar(tag, row[key], step)
        for name, value in row.get("eval", {}).items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"eval/{name}", value, step)
        if "alert" in row:
            self.writer.add_text("alerts", row["alert"], step)

    def add_grid(self, tag: str, grid: np.ndarray, step: int) -> None:
        """A uint8 (H, W, 3) picture, such as the progress grid."""
        self.writer.add_image(tag, grid, step, dataformats="HWC")
        self.writer.flush()  # a grid is written rarely; make it visible at once

    def close(self) -> None:
        self.writer.close()
