"""Where facegan keeps files outside run folders: the data cache and the torch hub cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Prepared data, reference statistics and the download registry: $FACEGAN_CACHE, else ~/.cache/facegan."""
    return Path(os.environ.get("FACEGAN_CACHE") or Path.home() / ".cache" / "facegan")


def torch_hub_checkpoints() -> Path:
    """Where torch hub keeps downloaded weights ($TORCH_HOME/hub/checkpoints), shared with other tools."""
    return Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch") / "hub" / "checkpoints"
