"""A trained network evaluated fast, for sampling: inference mode, and on request bfloat16.

Sampling calls the network hundreds of times with no gradient, so its cost is the forward
pass alone. Two things make that pass cheaper without touching the weights:
- ``torch.inference_mode`` (no autograd bookkeeping at all);
- with ``precision="bf16"``, the convolutions and matrix products run in bfloat16 under
  autocast (AVX-512 BF16 / AMX on recent x86 CPUs, tensor cores on GPUs), on channels-last
  memory, which is the layout the fast bfloat16 convolution kernels use. Everything the samplers
  compute from the network's output (x0-hat, the posterior mean, the noise) stays in float32.
Whether bfloat16 changes what a table measures is a measurement, not an assumption: see
``benchmarks/bench_cell.py`` and ``benchmarks/bench_samplers.py``.
"""
import torch

from qdm.errors import UserError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: choose {' or '.join(PRECISIONS)}")
    return precision


def for_sampling(model: torch.nn.Module, precision: str = "fp32"):
    """``eps(x, t)``: the model's noise prediction in float32, computed in ``precision``.
    With bf16 the model is moved to channels-last memory (in place; its values are unchanged)."""
    check_precision(precision)
    model.eval()
    if precision == "fp32":
        return model
    model.to(memory_format=torch.channels_last)
    device_type = next(model.parameters()).device.type

    def eps(x, t):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out = model(x.contiguous(memory_format=torch.channels_last), t)
        return out.float().contiguous()
    return eps

