"""A network run fast: its memory layout (training and sampling); for sampling, bfloat16 and compilation on request.

Sampling calls the network hundreds of times with no gradient, so its cost is the forward
pass alone. Four things make that pass cheaper without touching the weights' values:
- ``torch.inference_mode`` (no autograd bookkeeping at all);
- channels-last memory (``memory_layout``), the layout oneDNN's CPU convolutions and the GPUs'
  bfloat16 kernels are fastest on; it moves the weights, not their values;
- with ``precision="bf16"``, the convolutions and matrix products run in bfloat16 under
  autocast (AVX-512 BF16 / AMX on recent x86 CPUs, tensor cores on GPUs). Everything the samplers
  compute from the network's output (x0-hat, the posterior mean, the noise) stays in float32.
- with ``compiled=True``, ``torch.compile`` fuses the network's small operations into generated
  C++ (faster on a CPU after a compilation of some 40 s: results/bench_cell.md). It computes the same
  function to float rounding, so it changes no protocol: it pays for a long sampler (DDPM-1000)
  in fp32, not for a few steps, and not in bf16 (its eager kernels are faster).
Whether bfloat16 changes what a table measures is a measurement, not an assumption: see
``benchmarks/bench_cell.py`` and ``benchmarks/bench_samplers.py``.
"""
import os
import warnings

import torch

from qdm.errors import UserError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: choose {' or '.join(PRECISIONS)}")
    return precision


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a GPU that supports it, or a CPU with AMX or
    AVX-512 BF16. Elsewhere (an AVX2-only CPU) oneDNN emulates it, 7-10x slower than fp32 at the
    previews' batch sizes (``benchmarks/bench_epoch.py`` prints the ratio on the machine it runs on)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and any(getattr(torch.cpu, name, lambda: False)()
                                        for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def preview_precision(device: torch.device) -> str:
    """The precision of a run's pictures (the per-epoch grids, the final samples; no protocol's
    numbers): bf16 where the hardware computes it (about a third of fp32's time), else fp32."""
    return "bf16" if native_bf16(device) else "fp32"


def memory_layout(device: torch.device, precision: str = "fp32") -> torch.memory_format:
    """The layout a network runs in, for training (fp32) and sampling: channels-last on a CPU,
    where oneDNN's convolutions are faster on it in fp32 and bf16 (forward and weight gradient:
    results/bench_cell.md), and for bf16 on any device; the default layout for fp32 on a GPU. Either
    layout computes the same function to float rounding (tests/test_inference.py, test_train.py)."""
    bf16 = check_precision(precision) == "bf16"
    return torch.channels_last if device.type == "cpu" or bf16 else torch.contiguous_format


RECOMPILE_LIMIT = 64         # compiled kinds of network per process (dynamo's default: 8)
COMPILE_PAYS_FROM = 100_000  # images x network evaluations from which ~40 s of compiling pays off


def compile_choice() -> str:
    """``QDM_COMPILE``: "1" (always compile), "0" (never) or "auto" (the default): sampling compiles
    where the work pays for it (``worth_compiling``), the grids' Inception always (a grid scores
    many sets; a process that scores one loses about a minute)."""
    choice = os.environ.get("QDM_COMPILE", "auto")
    if choice not in ("auto", "0", "1"):
        raise UserError(f"QDM_COMPILE must be 0, 1 or auto, got {choice!r}")
    return choice


def worth_compiling(image_evaluations: int, precision: str = "fp32") -> bool:
    """Whether to compile for a job of ``image_evaluations`` (images x network calls each):
    ``QDM_COMPILE=1`` or ``0`` decides; otherwise compile fp32 from COMPILE_PAYS_FROM (1000 images
    by DDPM-1000 do; a few-step preview or 64 images do not), and never bf16, whose eager oneDNN
    kernels beat the compiled graph (results/bench_cell.md)."""
    choice = compile_choice()
    if choice != "auto":
        return choice == "1"
    return check_precision(precision) == "fp32" and image_evaluations >= COMPILE_PAYS_FROM


def compiled_or_eager(model: torch.nn.Module):
    """``model`` under torch.compile, falling back to ``model`` itself (with a warning) where this
    machine cannot compile (no C++ compiler, an unsupported platform)."""
    # Every network is one function to dynamo (UNet.forward), compiled once per kind (gate, layout,
    # precision) and reused by later networks of that kind; past its default of 8 kinds a process
    # (an ablation grid, a notebook) would run the rest uncompiled.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    fast = torch.compile(model, dynamic=False)

    def net(*inputs):
        nonlocal fast
        if fast is not None:
            try:
                return fast(*inputs)
            except Exception as e:          # inductor's errors have no common base class
                warnings.warn(f"torch.compile failed ({type(e).__name__}); running uncompiled "
                              "(QDM_COMPILE=0 skips the attempt)")
                fast = None
        return model(*inputs)
    return net


def for_sampling(model: torch.nn.Module, precision: str = "fp32", compiled: bool = False):
    """``eps(x, t)``: the model's noise prediction in float32, computed in ``precision``, by the
    compiled network if ``compiled``. The model is moved (in place) to ``memory_layout``."""
    device = next(model.parameters()).device
    model.eval().to(memory_format=memory_layout(device, precision))
    net = compiled_or_eager(model) if compiled else model
    if precision == "fp32":
        return net

    def eps(x, t):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = net(x.contiguous(memory_format=torch.channels_last), t)
        return out.float().contiguous()
    return eps

