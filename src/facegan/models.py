"""DCGAN generator and discriminator (Radford et al. 2016), built from a ModelConfig.

With L strided layers (cfg.d_depth, cfg.g_depth), S = cfg.image_size, s0 = S / 2**L and
C the width (cfg.d_width, cfg.g_width), the discriminator halves the side and doubles the channels L times:
(N, 3, S, S) -> (N, C, S/2, S/2) -> ... -> (N, C*2**(L-1), s0, s0) -> head -> logits,
and the generator mirrors it from z. Default 64x64: 4 layers, 64 -> 32 -> 16 -> 8 -> 4; 28x28: 2 layers to 7x7.
G and D may differ in width and depth (--g-conv-dim, --d-layers, ...).

Every network takes a ModelConfig or its fields by keyword, as notebooks write them:
Generator(z_size=100, conv_dim=64, image_size=64) == Generator(ModelConfig(z_size=100, conv_dim=64, image_size=64)).
D returns its head's natural shape, as the PyTorch tutorial and the course notebooks expect:
(N, 1, 1, 1) for the all-conv head, (N, 1) for the linear head and the MLP; the losses take either.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn.utils import parametrize

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
        for i in range(cfg.d_depth):
            channels_out, side = cfg.d_width * 2 ** i, side // 2
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
        if cfg.use_minibatch_std:
            blocks.append(MinibatchStd())  # (N, C*2**(L-1) + 1, s0, s0)
            channels_in += 1
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
        top = cfg.g_width * 2 ** (cfg.g_depth - 1)
        # Project z (a 1x1 map) to the smallest feature map with one s0 x s0 transposed convolution.
        self.project = _up_block(
            nn.ConvTranspose2d(cfg.z_size, top, cfg.image_size >> cfg.g_depth, 1, 0,
                               bias=not cfg.batchnorm),  # (N, top, s0, s0)
            top, cfg.batchnorm)
        blocks = []
        channels = top
        for _ in range(cfg.g_depth - 1):
            blocks.append(_up_block(
                nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=not cfg.batchnorm),  # (N, channels/2, 2x)
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
        width, size = cfg.g_width * 8, cfg.image_size
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
        width, size = cfg.d_width * 8, cfg.image_size
        layers = [nn.Flatten()]                                  # (N, 3*S*S)
        for n_in, n_out in ((3 * size * size, 4 * width), (4 * width, 2 * width), (2 * width, width)):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2, inplace=True)]  # (N, n_out)
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
        layers.append(nn.Linear(width, 1))                      # (N, 1)
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)  # (N, 1)


class ImageNoiseGenerator(nn.Module):
    """Noise shaped like an image -> strided convolutions -> one fully connected layer -> the image.

    The variant a face-generation write-up tried. Its input is noise (N, 3, S, S), drawn flat as
    (N, 3*S*S) like any z, so seeds and latent walks work the same. A 1x1 convolution narrows the
    conv features to about z_size numbers before the fully connected layer (docs/findings.md, "image-noise"):
    without it the layer sees thousands of independent random features, and G can learn only the
    mean face from them (what the write-up's 26M-parameter G did: one face, or pixel noise)."""

    def __init__(self, cfg: ModelConfig | None = None, **options):
        super().__init__()
        self.config = cfg = _model_config(cfg, options)
        width, size = cfg.g_width, cfg.image_size
        side = size // 4
        narrow = max(1, -(-cfg.z_size // (side * side)))  # channels so that narrow*side**2 >= z_size
        self.features = nn.Sequential(
            _conv_block(3, width, cfg.batchnorm, nn.ReLU(inplace=True)),           # (N, C, S/2, S/2)
            _conv_block(width, 2 * width, cfg.batchnorm, nn.ReLU(inplace=True)),   # (N, 2C, S/4, S/4)
            nn.Conv2d(2 * width, narrow, 1),                                       # (N, k, S/4, S/4)
            nn.Flatten(),                                                          # (N, k*(S/4)**2) ~ z_size
        )
        self.to_image = nn.Linear(narrow * side * side, 3 * size * size)          # (N, 3*S*S)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        """noise (N, 3*S*S) or (N, 3, S, S) -> images (N, 3, S, S) in [-1, 1]."""
        size = self.config.image_size
        images = self.to_image(self.features(noise.reshape(-1, 3, size, size)))
        return torch.tanh(images).view(-1, 3, size, size)


class ImageNoiseDiscriminator(nn.Module):
    """Its partner: strided convolutions -> fully connected layers, wider than G (as in the write-up)."""

    def __init__(self, cfg: ModelConfig | None = None, **options):
        super().__init__()
        self.config = cfg = _model_config(cfg, options)
        width, side = cfg.d_width, cfg.image_size // 8
        blocks = [_conv_block(3, width, False, nn.LeakyReLU(0.2, inplace=True)),            # (N, C, S/2, S/2)
                  _conv_block(width, 2 * width, cfg.batchnorm, nn.LeakyReLU(0.2, inplace=True)),  # (N, 2C, S/4, S/4)
                  _conv_block(2 * width, 4 * width, cfg.batchnorm, nn.LeakyReLU(0.2, inplace=True))]  # (N, 4C, S/8)²
        channels = 4 * width
        if cfg.use_minibatch_std:
            blocks.append(MinibatchStd())                                          # (N, 4C+1, S/8, S/8)
            channels += 1
        hidden = 16 * width
        self.features = nn.Sequential(*blocks, nn.Flatten())                       # (N, (4C+1)*(S/8)**2)
        head = [nn.Linear(channels * side * side, hidden), nn.LeakyReLU(0.2, inplace=True)]  # (N, 16C)
        if cfg.dropout > 0:
            head.append(nn.Dropout(cfg.dropout))
        self.head = nn.Sequential(*head, nn.Linear(hidden, 1))                    # (N, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # (N, 1)


class MinibatchStd(nn.Module):
    """Append one feature map: the std of each feature across groups of `group` images, averaged
    (Karras et al. 2018). A generator that draws one face for every z gives D a tell-tale zero here,
    so D can punish collapse, which per-image features cannot see."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = self.group if n % self.group == 0 else n
        grouped = x.float().reshape(group, n // group, c, h, w)             # (G, N/G, C, H, W)
        std = (grouped.var(dim=0, unbiased=False) + 1e-8).sqrt()          # (N/G, C, H, W)
        feature = std.mean(dim=(1, 2, 3)).to(x.dtype)                      # (N/G,)
        feature = feature.repeat(group).reshape(n, 1, 1, 1).expand(n, 1, h, w)  # (N, 1, H, W)
        return torch.cat([x, feature], dim=1)                              # (N, C+1, H, W)


def _conv_block(channels_in: int, channels_out: int, batchnorm: bool, activation: nn.Module) -> nn.Sequential:
    """Strided 4x4 convolution (halves the side), BatchNorm unless off, activation."""
    layers = OrderedDict(conv=nn.Conv2d(channels_in, channels_out, 4, 2, 1, bias=not batchnorm))
    if batchnorm:
        layers["bn"] = nn.BatchNorm2d(channels_out)
    layers["act"] = activation
    return nn.Sequential(layers)


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
            if parametrize.is_parametrized(m, "weight"):
                # Spectral-normalised layers (D's default) keep PyTorch's Kaiming-uniform init: N(0, 0.02)
                # under spectral norm measured worse (docs/findings.md "Better faces"). The same numbers are still
                # drawn, so a seed gives the runs the quality benchmark measured.
                nn.init.normal_(torch.empty_like(m.weight), 0.0, 0.02)
            else:
                nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


# arch -> (generator class, discriminator class): the one list of architectures' networks
NETWORKS = {"dcgan": (Generator, Discriminator), "mlp": (MLPGenerator, MLPDiscriminator),
            "image-noise": (ImageNoiseGenerator, ImageNoiseDiscriminator)}


def make_generator(cfg: ModelConfig) -> nn.Module:
    """The generator cfg describes (uninitialised): what checkpoints are loaded into."""
    return NETWORKS[cfg.arch][0](cfg)


def make_discriminator(cfg: ModelConfig) -> nn.Module:
    discriminator = NETWORKS[cfg.arch][1](cfg)
    if cfg.spectral_norm:  # every weight layer's largest singular value held at 1: a 1-Lipschitz D
        for module in list(discriminator.modules()):
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.utils.parametrizations.spectral_norm(module)
    return discriminator


def build_models(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """Both networks, freshly initialised from the current torch RNG."""
    generator, discriminator = make_generator(cfg), make_discriminator(cfg)
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


def activation_bytes(cfg: ModelConfig, batch_size: int) -> int:
    """Bytes of the layer outputs one training step keeps for backward at `batch_size` (fp32, an upper bound
    for bf16): G's forward once and D's three times (real, detached fake, fake for G's step). Measured by
    running both networks on the meta device: shapes only, nothing is allocated or computed."""
    total = [0]

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()

    with torch.device("meta"):
        generator, discriminator = build_models(cfg)
        leaves = [m for net in (generator, discriminator) for m in net.modules() if not list(m.children())]
        handles = [m.register_forward_hook(count) for m in leaves]
        try:
            with torch.no_grad():
                fake = generator(torch.empty(batch_size, cfg.noise_size))
                g_bytes, total[0] = total[0], 0
                discriminator(fake)
        finally:
            for handle in handles:
                handle.remove()
    return g_bytes + 3 * total[0]
