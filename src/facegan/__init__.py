"""facegan: train DCGANs on faces and generate new ones."""

__version__ = "0.1.0"
