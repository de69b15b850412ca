"""qdm: hybrid quantum-classical diffusion models, explained and measured.

Reproduces Chen, Hou, Hu, Cai (2025), "Quantum Generative Models for Image Generation:
Insights from MNIST and MedMNIST". Equation numbers in docstrings refer to that paper.
"""
import os

from qdm._torchvision_compat import ensure_torchvision_importable

__version__ = "0.1.0"

ensure_torchvision_importable()


def fast_mode() -> bool:
    """The one fast/full switch: QDM_FAST=1 makes notebooks and presets run in seconds (CI)."""
    return os.environ.get("QDM_FAST", "0").lower() not in ("", "0", "false", "no")
