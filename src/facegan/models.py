"""DCGAN generator and discriminator (Radford et al. 2016), built from a ModelConfig.

With L = cfg.layers strided layers, S = cfg.image_size, s0 = S / 2**L (cfg.final_size) and
C = cfg.conv_dim, the discriminator halves the side and doubles the channels L times:
(N, 3, S, S) -> (N, C, S/2, S/2) -> ... -> (N, C*2**(L-1), s0, s0) -> head -> logits,
and the generator mirrors it from z. Default 64x64: 4 layers, 64 -> 32 -> 16 -> 8 -> 4.

Every network takes a ModelConfig or its fields by keyword, as notebooks write them:
Generator(z_size=100, conv_dim=64, image_size=64) == Generator(ModelConfig(z_size=100, conv_dim=64, image_size=64)).
D returns its head's natural shape, as the PyTorch tutorial and the course notebooks expect:
(N, 1, 1, 1) for the all-conv head, (N, 1) for the linear head and the MLP; the losses take either.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .config import ModelConfig


def _model_config(cfg: ModelConfig | None, options: dict) -> ModelConfig:
    """A config object, or ModelConfig's fields by keyword (validated there), but not both."""
    if cfg is not None and options:
        raise TypeError("pass a ModelConfig or keyword options such as conv_dim=64, not both")
    return cfg if cfg is not None else ModelConfig(**options)


class Discriminator(nn.Module):
    """Strided convolutions, no pooling; BatchNorm on all but the first layer; LeakyReLU(0.2)."""

    def __init__(self, cfg: ModelConfig | None = None, **options):
        super().__init__()
        self.config = cfg = _model_config(cfg, options)
        blocks = []
        channels_in, side = 3, cfg.image_size
        for i in range(cfg.layers):
            channels_out, side = cfg.conv_dim * 2 ** i, side // 2
            layers = OrderedDict()
            # A bias only where no BatchNorm follows: BatchNorm's shift makes it redundant.
            layers["conv"] = nn.Conv2d(channels_in, channels_out, 4, 2, 1,
                                       bias=(i == 0 or not cfg.batchnorm))  # (N, C*2**i, side, side)
            if i > 0 and cfg.batchnorm:  # the paper leaves D's input layer without BatchNorm
                layers["bn"] = nn.BatchNorm2d(channels_out)
            layers["act"] = nn.LeakyReLU(0.2, inplace=True)
            if cfg.dropout > 0:
                layers["dropout"] = nn.Dropout2d(cfg.dropout)
            blocks.append(nn.Sequential(layers))
            channels_in = channels_out
        self.features = nn.Sequential(*blocks)  # (N, C*2**(L-1), s0, s0)
        if cfg.d_head == "conv":
            # One s0 x s0 convolution: all-convolutional, as in the paper.
            self.head = nn.Conv2d(channels_in, 1, side, 1, 0)  # (N, 1, 1, 1)
        else:
            # Flatten and a fully connected layer, as in the Udacity project.
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels_in * side * side, 1))  # (N, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, S, S) in [-1, 1] -> raw logits, (N, 1, 1, 1) or (N, 1) by head; the loss applies
        any sigmoid."""
        return self.head(self.features(images))


class Generator(nn.Module):
    """z -> transposed convolutions with BatchNorm and ReLU -> tanh image in [-1, 1]."""

    def __init__(self, cfg: ModelConfig | None = None, **options):
        super().__init__()
        self.config = cfg = _model_config(cfg, options)
        top = cfg.conv_dim * 2 ** (cfg.layers - 1)
        # Project z (a 1x1 map) to the smallest feature map with one s0 x s0 transposed convolution.
        self.project = _up_block(
            nn.ConvTranspose2d(cfg.z_size, top, cfg.final_size, 1, 0, bias=not cfg.batchnorm),  # (N, top, s0, s0)
            top, cfg.batchnorm)
        blocks = []
        channels = top
        for _ in range(cfg.layers - 1):
            blocks.append(_up_block(
                nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=not cfg.batchnorm),  # (N, channels/2, 2x side)
                channels // 2, cfg.batchnorm))
            channels //= 2
        self.upsample = nn.Sequential(*blocks)  # (N, C, S/2, S/2)
        # No BatchNorm on the output layer (the paper): it would pin the colour statistics.
        self.to_rgb = nn.ConvTranspose2d(channels, 3, 4, 2, 1)  # (N, 3, S, S)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, z_size) or (N, z_size, 1, 1) -> images (N, 3, S, S) in [-1, 1]."""
        z = z.reshape(z.shape[0], self.config.z_size, 1, 1)
        return torch.tanh(self.to_rgb(self.upsample(self.project(z))))


class MLPGenerator(nn.Module):
    """The non-convolutional baseline: z -> fully connected layers (ReLU) -> tanh image."""

    def __init__(self, cfg: ModelConfig | None = None, **options):
        super().__init__()
        self.config = cfg = _model_config(cfg, options)
        width, size = cfg.conv_dim * 8, cfg.image_size
        self.net = nn.Sequential(
            nn.Flatten(),                                        # (N, z)
            nn.Linear(cfg.z_size, width), nn.ReLU(inplace=True),   # (N, w)
            nn.Linear(width, 2 * width), nn.ReLU(inplace=True),  # (N, 2w)
            nn.Linear(2 * width, 4 * width), nn.ReLU(inplace=True),  # (N, 4w)
            nn.Linear(4 * width, 3 * size * size),               # (N, 3*S*S)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        return torch.tanh(self.net(z)).view(-1, 3, size, size)  # (N, 3, S, S)


class MLPDiscriminator(nn.Module):
    """The non-convolutional baseline: flattened image -> fully connected layers (LeakyReLU 0.2) -> logit."""

    def __init__(self, cfg: ModelConfig | None = None, **options):
        super().__init__()
        self.config = cfg = _model_config(cfg, options)
        width, size = cfg.conv_dim * 8, cfg.image_size
        layers = [nn.Flatten()]                                  # (N, 3*S*S)
        for n_in, n_out in ((3 * size * size, 4 * width), (4 * width, 2 * width), (2 * width, width)):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2, inplace=True)]  # (N, n_out)
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
        layers.append(nn.Linear(width, 1))                      # (N, 1)
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)  # (N, 1)


def _up_block(conv: nn.Module, channels: int, batchnorm: bool) -> nn.Sequential:
    """Transposed conv, BatchNorm (unless off), ReLU: the generator's repeating unit."""
    layers = OrderedDict(conv=conv)
    if batchnorm:
        layers["bn"] = nn.BatchNorm2d(channels)
    layers["act"] = nn.ReLU(inplace=True)
    return nn.Sequential(layers)


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv/linear weights N(0, 0.02), BatchNorm weight N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def make_generator(cfg: ModelConfig) -> nn.Module:
    """The generator cfg describes (uninitialised): what checkpoints are loaded into."""
    return MLPGenerator(cfg) if cfg.arch == "mlp" else Generator(cfg)


def build_models(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """Both networks, freshly initialised from the current torch RNG."""
    generator = make_generator(cfg)
    discriminator = MLPDiscriminator(cfg) if cfg.arch == "mlp" else Discriminator(cfg)
    init_weights(generator)
    init_weights(discriminator)
    return generator, discriminator


def training_bytes(cfg: ModelConfig) -> tuple[int, int]:
    """(parameters of G and D together, bytes to train them): weights, gradients and Adam's two moments
    at 4 bytes each, before activations. Counted on the meta device: nothing is allocated."""
    with torch.device("meta"):
        generator, discriminator = build_models(cfg)
    count = sum(p.numel() for net in (generator, discriminator) for p in net.parameters())
    return count, 16 * count
