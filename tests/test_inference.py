"""qdm.inference: the network evaluated for sampling, in fp32 (unchanged) or bfloat16 (close),
eager or compiled (the same function to float rounding)."""
import warnings

import pytest
import torch

from qdm.diffusion import Diffusion
from qdm.errors import UserError
from qdm.inference import COMPILE_PAYS_FROM, for_sampling, memory_layout, preview_precision, worth_compiling
from qdm.reproduce import protocol, protocol_tag, table_name
from qdm.schedule import make_schedule
from qdm.train import build_model, make_config

NETWORKS = [dict(preset="paper"), dict(preset="qdm"), dict(preset="qdm", model="quantum", quantum={"ansatz": "paper"}),
            dict(preset="paper", model="se")]


def _inputs(b=16):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 1, 28, 28, generator=g), torch.randint(0, 1000, (b,), generator=g)


@pytest.mark.parametrize("options", NETWORKS)
def test_fp32_path_is_the_model_in_channels_last_and_bf16_is_within_two_percent(options):
    """fp32: the model itself, moved on a CPU to channels-last memory (memory_layout): the same
    function to float rounding. bf16 (autocast, channels-last): float32 output of the input's shape,
    relative L2 error of the noise prediction under 2% (bfloat16 keeps 8 bits of mantissa, about
    0.4% per operation; measured about 0.5% on these networks)."""
    torch.manual_seed(0)
    model = build_model(make_config(**options)).eval()
    x, t = _inputs()
    with torch.inference_mode():
        reference = model(x, t)
        eps = for_sampling(model, "fp32")
        assert eps is model and memory_layout(torch.device("cpu")) == torch.channels_last
        assert not model.enc2.weight.is_contiguous()
        assert (eps(x, t) - reference).abs().max().item() <= 1e-5 * reference.abs().max().item()
        fast = for_sampling(model, "bf16")(x, t)
    assert fast.dtype == torch.float32 and fast.shape == reference.shape and fast.is_contiguous()
    assert ((fast - reference).norm() / reference.norm()).item() < 2e-2


def test_bf16_sampling_follows_the_fp32_trajectory():
    """Deterministic DDIM from the same noise: bfloat16's images stay close to fp32's (a small
    per-step error, not a different sampler), and the images are in the data range."""
    torch.manual_seed(0)
    model = build_model(make_config("qdm")).eval()
    diffusion = Diffusion(make_schedule("cosine", 1000))
    with torch.inference_mode():
        a = diffusion.sample(for_sampling(model, "fp32"), (8, 1, 28, 28), "ddim", 10, torch.Generator().manual_seed(1))
        b = diffusion.sample(for_sampling(model, "bf16"), (8, 1, 28, 28), "ddim", 10, torch.Generator().manual_seed(1))
    assert b.abs().max() <= 1 and (a - b).abs().mean() < 0.05


def test_precision_is_part_of_the_protocol_only_when_not_fp32():
    """fp32 protocols are unchanged (cells recorded before the option stay recorded under them);
    bf16 is a protocol of its own, with its own results names."""
    assert "precision" not in protocol("paper") and protocol("paper", precision="fp32") == protocol("paper")
    fast = protocol("paper", sampler="dpmpp_2m", steps=20, precision="bf16")
    assert fast["precision"] == "bf16" and fast != protocol("paper", sampler="dpmpp_2m", steps=20)
    assert protocol_tag(fast, "paper") == "dpmpp_2m20-bf16-n1000"
    assert table_name("table1", "paper", fast) == "table1_paper_dpmpp_2m20-bf16-n1000"
    assert table_name("table1", "paper", protocol("paper")) == "table1"


def test_a_preset_can_make_bf16_its_protocol(monkeypatch):
    """The precision is preset data like the sampler: a preset that samples in bf16 gets it in its
    default protocol (and results named for its home table), and --precision fp32 still asks for fp32."""
    import dataclasses
    from qdm import presets
    monkeypatch.setitem(presets.PRESETS, "paper", dataclasses.replace(presets.get_preset("paper"), precision="bf16"))
    assert protocol("paper")["precision"] == "bf16" and table_name("table1", "paper", protocol("paper")) == "table1"
    assert "precision" not in protocol("paper", precision="fp32")
    assert table_name("table1", "paper", protocol("paper", precision="fp32")) == "table1_paper_ddpm1000-fp32-n1000"


@pytest.mark.parametrize("kwargs", [dict(precision="fp16"), dict(sampler="euler"), dict(steps=0), dict(n=0)])
def test_bad_protocol_options_are_one_line_errors(kwargs):
    with pytest.raises(UserError):
        protocol("paper", **kwargs)


@pytest.mark.parametrize("options", [dict(preset="paper"), dict(preset="paper", model="quantum", quantum={"ansatz": "paper"})])
def test_compiled_network_is_the_same_function_to_float_rounding(options):
    """torch.compile fuses operations and reorders sums: fp32 outputs agree with eager to float
    rounding (max error 1e-4 of outputs of size ~1), bf16 compiled to bf16's own 2%; and a whole
    DDPM chain (stochastic, 50 steps) from the same noise ends at the same images to 1e-3."""
    torch.manual_seed(0)
    model = build_model(make_config(**options)).eval()
    x, t = _inputs()
    diffusion = Diffusion(make_schedule("cosine", 50))
    with torch.inference_mode():
        reference = model(x, t)
        compiled = for_sampling(model, "fp32", compiled=True)
        assert (compiled(x, t) - reference).abs().max().item() < 1e-4
        fast = for_sampling(model, "bf16", compiled=True)(x, t)
        assert ((fast - reference).norm() / reference.norm()).item() < 2e-2
        model.to(memory_format=torch.contiguous_format)
        a = diffusion.sample(model, (4, 1, 28, 28), "ddpm", 50, torch.Generator().manual_seed(1))
        b = diffusion.sample(compiled, (4, 1, 28, 28), "ddpm", 50, torch.Generator().manual_seed(1))
    assert (a - b).abs().max().item() < 1e-3


def test_a_machine_that_cannot_compile_samples_uncompiled_with_a_warning(monkeypatch):
    def broken(module, **kwargs):
        def fail(*args):
            raise RuntimeError("no C++ compiler")
        return fail
    monkeypatch.setattr(torch, "compile", broken)
    torch.manual_seed(0)
    model = build_model(make_config("fast")).eval()
    x, t = _inputs(4)
    net = for_sampling(model, "fp32", compiled=True)
    with torch.inference_mode(), pytest.warns(UserWarning, match="QDM_COMPILE=0"):
        out = net(x, t)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error")              # one warning, not one per call
        assert torch.equal(net(x, t), out) and torch.equal(out, model(x, t))


def test_compiling_is_chosen_by_the_work_unless_QDM_COMPILE_says(monkeypatch):
    monkeypatch.delenv("QDM_COMPILE", raising=False)
    assert worth_compiling(1000 * 1000) and not worth_compiling(500 * 50) and not worth_compiling(64 * 1000)
    assert worth_compiling(COMPILE_PAYS_FROM) and not worth_compiling(COMPILE_PAYS_FROM - 1)
    assert not worth_compiling(10**9, "bf16")
    monkeypatch.setenv("QDM_COMPILE", "0")
    assert not worth_compiling(10**9)
    monkeypatch.setenv("QDM_COMPILE", "1")
    assert worth_compiling(1)
    monkeypatch.setenv("QDM_COMPILE", "yes")
    with pytest.raises(UserError, match="QDM_COMPILE"):
        worth_compiling(1)


def test_memory_layout_is_channels_last_on_a_cpu_and_for_bf16():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert memory_layout(cpu) == memory_layout(cpu, "bf16") == memory_layout(gpu, "bf16") == torch.channels_last
    assert memory_layout(gpu) == torch.contiguous_format
    with pytest.raises(UserError, match="precision"):
        memory_layout(cpu, "fp16")


def test_a_runs_pictures_are_drawn_in_bf16_only_where_the_hardware_computes_it(monkeypatch, tiny_data, tmp_path):
    """An AVX2-only CPU emulates bf16 (7-10x slower than fp32 for a preview): fp32 there; AMX,
    AVX-512 BF16 or a GPU with bf16: bf16. The run's summary names what its final samples used."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for amx, avx512_bf16 in [(False, False), (True, False), (False, True)]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        assert preview_precision(cpu) == ("bf16" if amx or avx512_bf16 else "fp32")
        for has in (False, True):
            monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: has)
            assert preview_precision(gpu) == ("bf16" if has else "fp32")
    from qdm.train import make_config, train
    for native in (False, True):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
        cfg = make_config("fast", batch_size=8, val_size=8, device="cpu")
        summary = train(cfg, tmp_path / str(native), progress=False, data=tiny_data)
        assert summary["samples"].endswith("in bf16" if native else "in fp32")


def test_compiling_a_ninth_kind_of_network_still_compiles():
    """Dynamo compiles UNet.forward once per kind of network and, past its recompile limit (8 by
    default), runs further kinds uncompiled; a grid meets more kinds than that in one process."""
    with torch._dynamo.config.patch(recompile_limit=8):      # (monkeypatch's undo would delete the option)
        for_sampling(build_model(make_config("fast")), "fp32", compiled=True)
        assert torch._dynamo.config.recompile_limit >= 64
