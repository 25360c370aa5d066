"""InceptionV3 as used for FID (the TensorFlow 2015-12-05 graph), in plain PyTorch, no torchvision.

It loads the standard weights file `pt_inception-2015-12-05-6726825d.pth` (pytorch-fid's): module
names and shapes follow torchvision's Inception3 with 1008 classes and no auxiliary head, and the
blocks carry the TensorFlow graph's quirks that FID numbers depend on: average pooling that
ignores padding in the A, C and E blocks, and max pooling in the last E block. Output: the
2048-d average-pooled features, from images resized to 299x299 bilinearly as the reference does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FaceganError
from ..paths import torch_hub_checkpoints

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_NAME}"
WEIGHTS_SHA256_PREFIX = "6726825d"  # torch hub convention: the file name carries its hash's first digits


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _tf_avg_pool(x):
    # TensorFlow's 3x3 average pool divides by the number of real (unpadded) inputs.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x):  # (N, 224 + pool_features, H, W)
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_tf_avg_pool(x)),
        ], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):  # (N, 480 + in_channels, H/2, W/2)
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):  # (N, 768, 17, 17)
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([self.branch1x1(x), seven, double, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):  # (N, 1280, 8, 8)
        seven = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            seven = layer(seven)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool  # the FID graph's last block max-pools (a quirk of that graph)
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):  # (N, 2048, 8, 8)
        three = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(three), self.branch3x3_2b(three),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(pooled),
        ], 1)


class FIDInceptionV3(nn.Module):
    """Images in [0, 1] (N, 3, H, W) -> (N, 2048) pool features, in eval mode, no gradients."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)   # (N, 32, 149, 149)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)            # (N, 32, 147, 147)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)  # (N, 64, 147, 147) -> pool 73
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)            # (N, 80, 73, 73)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)           # (N, 192, 71, 71) -> pool 35
        self.Mixed_5b = InceptionA(192, pool_features=32)                  # (N, 256, 35, 35)
        self.Mixed_5c = InceptionA(256, pool_features=64)                  # (N, 288, 35, 35)
        self.Mixed_5d = InceptionA(288, pool_features=64)                  # (N, 288, 35, 35)
        self.Mixed_6a = InceptionB(288)                                    # (N, 768, 17, 17)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)                  # (N, 768, 17, 17)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)                                    # (N, 1280, 8, 8)
        self.Mixed_7b = InceptionE(1280, max_pool=False)                   # (N, 2048, 8, 8)
        self.Mixed_7c = InceptionE(2048, max_pool=True)                    # (N, 2048, 8, 8)
        self.fc = nn.Linear(2048, 1008)  # unused for FID; present so the weights file loads strictly
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # [0, 1] -> the [-1, 1] the graph expects
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (N, 2048)


def find_weights(explicit=None) -> Path | None:
    """--inception-weights, else the torch hub cache under TORCH_HOME; None when neither has it."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FaceganError(f"Inception weights {path} do not exist: pass the path of {WEIGHTS_NAME}")
        return path
    hub = torch_hub_checkpoints() / WEIGHTS_NAME
    return hub if hub.is_file() else None


def load_inception(weights=None, device="cpu", download: bool = True) -> FIDInceptionV3:
    """The FID network with the standard weights: --inception-weights, the torch hub cache, or a
    download from the standard URL into that cache; offline, a message saying where to put the file."""
    path = find_weights(weights)
    if path is None and download:
        hub_dir = torch_hub_checkpoints()
        hub_dir.mkdir(parents=True, exist_ok=True)
        from ..data.download import fetch
        try:
            path = fetch(WEIGHTS_URL, hub_dir / WEIGHTS_NAME, progress=True)
        except FaceganError:
            path = None  # offline or refused: the message below says what to do instead
    if path is None:
        raise FaceganError(f"FID/KID/precision-recall need the Inception weights {WEIGHTS_NAME}, and it could not "
                           f"be downloaded: fetch {WEIGHTS_URL} by hand and pass --inception-weights PATH (or put "
                           f"it in $TORCH_HOME/hub/checkpoints/); swd and msssim need no download")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(WEIGHTS_SHA256_PREFIX):
        if weights is None:
            path.unlink()  # a bad download must not sit in the cache looking like the real file
        raise FaceganError(f"{path} is not the FID Inception weights file (sha256 {digest[:8]}..., expected "
                           f"{WEIGHTS_SHA256_PREFIX}...): download {WEIGHTS_URL} again")
    model = FIDInceptionV3()
    load_state_dict_strict(model, torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device)


def load_state_dict_strict(model: nn.Module, state: dict) -> None:
    """Every key and shape must match; only BatchNorm's num_batches_tracked may be absent (older files)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise FaceganError(f"the Inception weights do not fit this network (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]}, wrong shape {wrong[:3]}): is it {WEIGHTS_NAME}?")
    model.load_state_dict({k: v for k, v in state.items()}, strict=False)
