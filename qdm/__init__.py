"""qdm: hybrid quantum-classical diffusion models, explained and measured.

Reproduces Chen, Hou, Hu, Cai (2025), "Quantum Generative Models for Image Generation:
Insights from MNIST and MedMNIST". Equation numbers in docstrings refer to that paper.
"""
import os

# torch's OpenMP threads spin while they wait; on cores shared with another job (a background grid
# beside the tests, two grid workers) a spinning 2-thread job runs slower than a passive one
# (results/bench_threads.md). Waiting passively costs nothing measurable on idle cores. Set before torch
# loads its OpenMP runtime, and inherited by every process qdm starts; a user's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from qdm._torchvision_compat import ensure_torchvision_importable

__version__ = "0.1.0"

ensure_torchvision_importable()


def fast_mode() -> bool:
    """The one fast/full switch: QDM_FAST=1 makes notebooks and presets run in seconds (CI)."""
    return os.environ.get("QDM_FAST", "0").lower() not in ("", "0", "false", "no")
