"""Make ``import torchvision`` work on a CPU-only torch build.

PyPI ships torchvision 0.28.0 (the only release for torch 2.13.0) with a CUDA-built C
extension. Next to a CPU torch that extension cannot load, and ``import torchvision`` then
fails with "operator torchvision::nms does not exist": its Python side registers fake
kernels for ``torchvision::nms`` and ``torchvision::qnms``, whose schemas the extension
would have defined. qdm never calls those detection ops, so defining the two schemas
(without kernels) is enough for the datasets, transforms and pytorch-fid's Inception.

Where torchvision's own extension loads (a matching torch + torchvision, e.g. on a user's
CUDA machine), this does nothing. It is called once, from ``qdm/__init__.py``.
"""
import importlib.machinery
import importlib.util
import os

import torch

_library = None  # keeps the torch.library.Library alive (schemas vanish with it)


def ensure_torchvision_importable() -> None:
    global _library
    spec = importlib.util.find_spec("torchvision")
    if spec is None or _library is not None or "torchvision" in torch.ops.loaded_libraries:
        return
    folder = os.path.dirname(spec.origin)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(folder, "_C" + suffix)
        if os.path.exists(path):
            try:
                torch.ops.load_library(path)  # torchvision's own ops: nothing to do
                return
            except OSError:
                break
    _library = torch.library.Library("torchvision", "DEF")
    _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
