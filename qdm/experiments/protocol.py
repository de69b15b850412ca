"""How a trained model is measured, in one place: the protocol (N images, the sampler and its steps,
the seed, the precision) written into every results file, and the names of results files, one per
(preset, protocol), so that no protocol's numbers replace another's."""
from qdm.diffusion import SAMPLERS
from qdm.errors import UserError
from qdm.inference import check_precision
from qdm.presets import get_preset
from qdm.train import make_config


def column(cls) -> str:
    return "all" if cls is None else str(cls)


def protocol(preset: str, n: int | None = None, sampler: str | None = None, steps: int | None = None,
             seed: int = 0, precision: str | None = None, T: int | None = None) -> dict:
    """How images are measured, in one place, written into every results file: N generated
    images per class (EMA weights of best.pt) against the class's test images (all of them;
    the first n_real in the fast preset), the sampler (qdm.diffusion.SAMPLERS) and its steps, the
    seed, and the network's precision while sampling (qdm.inference) when it is not fp32; each
    defaults to the preset's. ``T``: the models' diffusion steps (default the preset's), all of which
    DDPM runs."""
    p = get_preset(preset)
    n_default, sampler_default, steps_default = p.n, p.sampler, p.steps
    precision = precision or p.precision
    sampler = sampler or sampler_default
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    T = T or make_config(preset).T
    if steps is None:
        steps = T if sampler == "ddpm" else steps_default if sampler == sampler_default else 100
    if n is not None and n < 2 or steps < 1:
        raise UserError(f"--n must be at least 2 and --steps at least 1 (got n={n}, steps={steps})")
    check_ddpm_steps(sampler, steps, T)
    return {"n": n or n_default, "n_real": p.n_real,
            "real": "test split of the class", "sampler": sampler,
            "steps": steps, "seed": seed, **({"precision": precision} if check_precision(precision) != "fp32" else {}),
            "fid": "pytorch-fid InceptionV3 pool3 (2048)", "kid": "unbiased, cubic polynomial kernel",
            "ssim": "random real pair of the class (fixed seed); SSIM_nearest: best over 200 real"}


def check_ddpm_steps(sampler: str, steps: int, T: int) -> None:
    """Ancestral DDPM sampling runs every one of a model's T steps: a protocol naming other steps would record
    what did not run."""
    if sampler == "ddpm" and steps != T:
        raise UserError(f"the ddpm sampler runs all T = {T} steps of the model, not {steps}: leave out --steps, "
                        "or use --sampler ddpm_respaced for fewer")


def protocol_tag(proto: dict, preset: str) -> str:
    """A protocol in a file name: sampler and steps, the precision where it is not fp32 or not the
    preset's, N, and the real images and seed where they are not the preset's (e.g. ddim50-n500)."""
    default = protocol(preset)
    precision = proto.get("precision", "fp32")
    named = precision != "fp32" or precision != default.get("precision", "fp32")
    return (f"{proto['sampler']}{proto['steps']}" + (f"-{precision}" if named else "")
            + f"-n{proto['n']}"
            + (f"-real{proto.get('n_real')}" if proto.get("n_real") != default["n_real"] else "")
            + (f"-seed{proto.get('seed')}" if proto.get("seed") != default["seed"] else ""))


def results_name(base: str, home: str, preset: str, proto: dict | None = None) -> str:
    """The name of a table's or a study's results files, one per (preset, protocol): ``base`` for
    its home preset with that preset's protocol, <base>_<preset> for another preset with its own
    protocol, <base>_<preset>_<protocol tag> for any other protocol. Figures go to <name>_figures/."""
    if proto is not None and proto != protocol(preset):
        return f"{base}_{preset}_{protocol_tag(proto, preset)}"
    return base if preset == home else f"{base}_{preset}"


def protocol_flags(proto: dict) -> str:
    """The command-line flags that give ``proto`` (the commands a grid prints)."""
    return (f"--n {proto['n']} --sampler {proto['sampler']} --steps {proto['steps']} --seed {proto['seed']}"
            + (f" --precision {proto['precision']}" if "precision" in proto else ""))
