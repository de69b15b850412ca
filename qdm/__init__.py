"""qdm: hybrid quantum-classical diffusion models, explained and measured.

Reproduces Chen, Hou, Hu, Cai (2025), "Quantum Generative Models for Image Generation:
Insights from MNIST and MedMNIST". Equation numbers in docstrings refer to that paper.
"""
from qdm._torchvision_compat import ensure_torchvision_importable

__version__ = "0.1.0"

ensure_torchvision_importable()
