"""Generator -> a file other programs run: safetensors, ONNX or TorchScript, each with a JSON sidecar
(FILE.json: z size, image size, output range, facegan version, training steps).

safetensors holds only tensors; the sidecar's "graph" lists the layers in order, so about a dozen lines
of plain torch rebuild the generator with no facegan installed (docs/reference.md "Export" shows them, and a
test runs that very snippet). ONNX uses torch's exporter with a dynamic batch axis; TorchScript is traced.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from . import __version__, checkpoints
from .errors import FaceganError
from .fileio import atomic_write
from .generate import generator_from_state, generator_weights

EXPORT_FORMAT = "facegan-generator-export-1"
# format -> (file name suffix, the optional package it needs, pip extra): the one list of export formats
FORMATS = {"safetensors": (".safetensors", "safetensors"), "onnx": (".onnx", "onnxscript"),
           "torchscript": (".torchscript.pt", None)}
_SUFFIX_FORMATS = {".safetensors": "safetensors", ".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript"}


def format_from_path(path) -> str:
    """The export format an output file name asks for (x.onnx -> onnx)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise FaceganError(f"cannot tell the export format from {Path(path).name}: end it in .safetensors, .onnx "
                           f"or .pt (TorchScript), or pass --format")
    return _SUFFIX_FORMATS[suffix]


def sidecar_path(path) -> Path:
    """generator.onnx -> generator.onnx.json (never clashes between formats in one folder)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _require(package: str | None, fmt: str) -> None:
    if package is None:
        return
    try:
        __import__(package)
    except ImportError:
        raise FaceganError(f"--format {fmt} needs the {package} package: pip install 'facegan[export]'") from None


def layer_graph(generator: nn.Module) -> list[list]:
    """The generator's forward pass as a list of plain ops over its state-dict names, e.g.
    ["conv_transpose", "project.conv", 1, 0] or ["batch_norm", "project.bn", 1e-05]."""
    from .models import Generator, MLPGenerator

    if isinstance(generator, Generator):
        ops = [["reshape", [generator.config.z_size, 1, 1]]]        # z (N, z) -> (N, z, 1, 1)
    elif isinstance(generator, MLPGenerator):
        ops = []
    else:
        raise FaceganError(f"safetensors export does not know {type(generator).__name__}: use --format onnx")
    for name, module in generator.named_modules():
        if isinstance(module, nn.ConvTranspose2d):
            ops.append(["conv_transpose", name, module.stride[0], module.padding[0]])
        elif isinstance(module, nn.Linear):
            ops.append(["linear", name])
        elif isinstance(module, nn.BatchNorm2d):
            ops.append(["batch_norm", name, module.eps])
        elif isinstance(module, nn.ReLU):
            ops.append(["relu"])
        elif not list(module.children()) and not isinstance(module, nn.Flatten):
            raise FaceganError(f"safetensors export does not know the layer {name} ({type(module).__name__}): "
                               f"use --format onnx")
    ops.append(["tanh"])
    if isinstance(generator, MLPGenerator):
        size = generator.config.image_size
        ops.append(["reshape", [3, size, size]])                      # (N, 3*S*S) -> (N, 3, S, S)
    return ops


def _write_safetensors(generator: nn.Module, sidecar: dict, out: Path) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()
               if not k.endswith("num_batches_tracked")}  # a counter, not used to generate
    sidecar["graph"] = layer_graph(generator)
    with atomic_write(out, "wb") as f:
        f.write(save(tensors, metadata={"facegan": json.dumps(sidecar)}))


def _write_onnx(generator: nn.Module, sidecar: dict, out: Path) -> None:
    z = torch.randn(2, generator.config.noise_size)
    quiet = io.StringIO()
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)  # the exporter narrates every stage and lists unrelated torchvision ops
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(generator, (z,), input_names=["z"], output_names=["images"],
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True)
    finally:
        onnx_logger.setLevel(level)
    with atomic_write(out, None, suffix=".onnx") as tmp:
        program.save(str(tmp))


def _write_torchscript(generator: nn.Module, sidecar: dict, out: Path) -> None:
    with warnings.catch_warnings(), atomic_write(out, "wb") as f:
        warnings.simplefilter("ignore")  # TorchScript is deprecated upstream but still what many runtimes load
        torch.jit.save(torch.jit.trace(generator, torch.randn(2, generator.config.noise_size)), f)


_WRITERS = {"safetensors": _write_safetensors, "onnx": _write_onnx, "torchscript": _write_torchscript}


def export(checkpoint, fmt: str | None = None, out=None, ema: bool = True) -> tuple[Path, Path]:
    """Write the checkpoint's generator (the EMA one when present and `ema`) as `fmt` to `out`, and
    its sidecar beside it. Returns (file, sidecar). `fmt` defaults to out's ending, else safetensors;
    `out` to RUN/export/generator.<format ending>."""
    fmt = fmt or (format_from_path(out) if out else "safetensors")
    if out is None:
        from .runs import run_of
        out = run_of(checkpoint).path / "export" / f"generator{FORMATS[fmt][0]}"
    if fmt not in FORMATS:
        raise FaceganError(f"unknown export format '{fmt}': use one of {', '.join(FORMATS)}")
    _require(FORMATS[fmt][1], fmt)
    state = checkpoints.load(checkpoint)
    generator, cfg = generator_from_state(state, "cpu", ema=ema)
    generator.float()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar = {
        "format": EXPORT_FORMAT, "export": fmt, "file": out.name, "facegan_version": __version__,
        "arch": cfg.model.arch, "z_size": cfg.model.noise_size, "image_size": cfg.model.image_size,
        "input": "z: float32 (N, z_size), drawn from N(0, 1)"
                 + (" (image-shaped noise, flattened 3 x S x S)" if cfg.model.arch == "image-noise" else ""),
        "output": "images: float32 (N, 3, image_size, image_size), RGB, channels first",
        "output_range": [-1.0, 1.0], "to_uint8": "round((x + 1) * 127.5)",
        "ema": generator_weights(state, ema)[1],
        "training_steps": state.get("step"), "epoch": state.get("epoch"),
        "model_config": cfg.to_dict()["model"],
    }
    _WRITERS[fmt](generator, sidecar, out)
    side = sidecar_path(out)
    with atomic_write(side, "w") as f:
        f.write(json.dumps(sidecar, indent=2) + "\n")
    return out, side
