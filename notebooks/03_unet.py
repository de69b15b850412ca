# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. The lightweight U-Net and where the gate sits
#
# **One idea:** the denoiser $\epsilon_\theta(x_t, t)$ of the paper is a deliberately small
# U-Net, and the classical and quantum models differ in *one* place only: a gate that
# multiplies the bottleneck feature map. Section IV-C describes "three convolutional encoder
# layers, a residual block at the bottleneck, and two transposed convolutional decoder
# layers"; the official code adds the details (kernel sizes, ReLUs, one skip connection from the
# first encoder layer, and the timestep embedding of notebook 2 added to the deepest map):
#
# ```text
# x (C,28,28) -> enc1 3x3 -> 32x28x28 ------------------------------------ skip ---+
#             -> enc2 3x3/2 -> 64x14x14                                           |
#             -> enc3 3x3/2 -> 128x7x7  + Embed(t)             (Eq. 5-6)          |
#             -> residual block           = x_bottleneck                          |
#             -> gate(x_bottleneck)       = x_bottleneck * z~  (Eq. 8)            |
#             -> dec1 convT 2x2/2 -> 64x14x14 -> dec2 convT 2x2/2 -> 32x28x28 --concat
#             -> out 3x3 -> epsilon-hat (C,28,28)
# ```
#
# In the quantum model (Section IV-D), the bottleneck map is pooled to $z \in \mathbb{R}^{128}$,
# projected to 16 numbers, fed to a 16-qubit circuit whose Pauli-Z expectations
# $z_{\text{quantum}} = [\langle Z_i\rangle]_{i=1}^{16}$ (Eq. 7) are projected back to
# $\tilde z \in \mathbb{R}^{128}$ and multiplied channel-wise into the map:
#
# $$
# x_{\text{quantum}} = x_{\text{bottleneck}} \odot \tilde z .
# \tag{8}
# $$
#
# In qdm the gate is any module that maps the $(B, 128, 7, 7)$ bottleneck to a map of the same
# shape: `nn.Identity()` for the classical model, the quantum layer (notebook 4) for the quantum
# one. This notebook traces shapes through the network with forward hooks, counts parameters,
# and plugs in an identity gate and two custom ones.
#
# **Time:** seconds in both modes.

# %% tags=["remove-cell"]
# On Colab: fetch qdm and the packages Colab lacks (does nothing anywhere else).
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    url = os.environ.get("QDM_REPOSITORY") or input("URL of the qdm repository (for git clone): ")
    if not os.path.isdir("qdm"):
        subprocess.run(["git", "clone", "--depth", "1", url, "qdm"], check=True)
    packages = ["pytorch-fid", "medmnist", "pennylane", "-e", "qdm"]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)
    sys.path.insert(0, os.path.abspath("qdm"))

# %% tags=["hide-input"]
from qdm.notebook import setup

FAST = setup()

from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display
from torch import nn

from qdm.unet import UNet, count_parameters

B = 2 if FAST else 8  # batch size of the traced forward passes
print(f"batch of {B}")

# %% [markdown]
# ## Shapes through the network
#
# A forward hook on every top-level layer records what goes in and what comes out. Two steps
# are not layers and so do not appear: the addition of $\mathrm{Embed}(t)$ to the output of
# `enc3` (a $(B,128)$ vector broadcast over $7 \times 7$), and the concatenation of `dec2`'s
# output with `enc1`'s (the skip), which is why `out` takes 64 channels.


# %%
def trace(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> list[dict]:
    """One forward pass; for each top-level layer, in call order: its input/output shapes and
    size."""
    rows, hooks = [], []
    for name, module in net.named_children():

        def hook(module, inputs, output, name=name):
            rows.append(
                {
                    "layer": name,
                    "type": type(module).__name__,
                    "input": [tuple(i.shape) for i in inputs],
                    "output": tuple(output.shape),
                    "parameters": count_parameters(module),
                }
            )

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            net(x, t)
    finally:
        for h in hooks:
            h.remove()
    return rows


def table(rows: list[dict]) -> Markdown:
    """The rows as a Markdown table (shapes as code, parameter counts with thousands separators)."""
    lines = ["| layer | type | input | output | parameters |", "|---|---|---|---|---:|"]
    lines += [
        f"| {r['layer']} | {r['type']} | {' + '.join(f'`{s}`' for s in r['input'])} | "
        f"`{r['output']}` "
        f"| {r['parameters']:,} |"
        for r in rows
    ]
    return Markdown("\n".join(lines))


torch.manual_seed(0)
net1 = UNet(in_channels=1)  # MNIST
x1 = torch.randn(B, 1, 28, 28)
t = torch.randint(0, 1000, (B,))
rows1 = trace(net1, x1, t)
display(table(rows1))
print(f"total: {count_parameters(net1):,} parameters")
assert sum(r["parameters"] for r in rows1) == count_parameters(net1)

# %% [markdown]
# ## One channel and three
#
# MNIST is grayscale (1 channel), PathMNIST is RGB (3 channels, each normalised to $[-1, 1]$).
# Only the first and the last convolution see the channel count, so the two models differ by
# $2 \cdot 32 \cdot 9$ weights in `enc1` and $2 \cdot 64 \cdot 9 + 2$ in `out`. The residual
# block at the bottleneck holds two thirds of all parameters.

# %%
torch.manual_seed(0)
net3 = UNet(in_channels=3)  # PathMNIST
rows3 = trace(net3, torch.randn(B, 3, 28, 28), t)
for r1, r3 in zip(rows1, rows3):
    if r1 != r3:
        print(
            f"{r1['layer']:>5}: 1 channel {r1['input'][0]} -> {r1['output']}, "
            f"{r1['parameters']:,} parameters; "
            f"3 channels {r3['input'][0]} -> {r3['output']}, {r3['parameters']:,}"
        )
print(
    f"total: {count_parameters(net1):,} (1 channel) vs {count_parameters(net3):,} (3 channels), "
    f"difference {count_parameters(net3) - count_parameters(net1):,} = 2*32*9 + 2*64*9 + 2"
)
assert count_parameters(net3) - count_parameters(net1) == 2 * 32 * 9 + 2 * 64 * 9 + 2

try:
    net1(torch.randn(B, 3, 28, 28), t)  # a 3-channel batch into the 1-channel model
except ValueError as e:
    print("a wrong shape is refused:", e)

# %%
names = [r["layer"] for r in rows1]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
pos = torch.arange(len(names)).float()
axes[0].bar(pos - 0.2, [r["parameters"] for r in rows1], 0.4, label="1 channel (MNIST)")
axes[0].bar(pos + 0.2, [r["parameters"] for r in rows3], 0.4, label="3 channels (PathMNIST)")
axes[0].set(
    yscale="log",
    ylabel="parameters",
    title=f"parameters per layer (total {count_parameters(net1):,})",
)
axes[0].legend()
elements = [torch.Size(r["output"][1:]).numel() for r in rows1]
axes[1].bar(pos, elements, color="C2")
axes[1].set(
    yscale="log", ylabel="numbers per image", title="size of each layer's output (per image)"
)
for ax in axes:
    ax.set_xticks(pos, names, rotation=30)
    ax.grid(alpha=0.3, axis="y")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The gate (Eq. 8)
#
# The gate acts on the output of the residual block, *after* $\mathrm{Embed}(t)$ has been added,
# and everything the decoder knows about $t$ passes through it: the skip connection carries
# `enc1`'s features, which do not depend on $t$. Three gates show what the hook allows.
#
# **1. Identity.** `UNet()` and `UNet(gate=nn.Identity())` are the same classical model: with the
# same weights, the outputs are identical.

# %%
net_id = UNet(gate=nn.Identity())
net_id.load_state_dict(net1.state_dict())
with torch.no_grad():
    assert torch.equal(net_id(x1, t), net1(x1, t))
print(
    "gate=None and gate=nn.Identity(): identical outputs, "
    f"{count_parameters(net_id):,} parameters each"
)

# %% [markdown]
# **2. A custom gate with the quantum layer's data path.** Pool the map to $z \in \mathbb{R}^{128}$,
# project to 16 numbers, apply a fixed non-linearity where the circuit would be, project back
# to $\tilde z \in \mathbb{R}^{128}$ and multiply (Eq. 8). We use $\cos$ as the stand-in: for 16
# qubits prepared with $R_Y(x_i)$ and measured without entangling gates, $\langle Z_i \rangle =
# \cos x_i$ exactly (notebook 4 builds the real circuit). The gate adds two Linear layers,
# $128 \cdot 16 + 16$ and $16 \cdot 128 + 128$ parameters, and trains end to end: the Linear in
# front of the non-linearity receives a gradient (in the official code it did not, because the
# circuit's input was detached from the graph).


# %%
class CosGate(nn.Module):
    """Eq. 7-8's data path with cos standing in for the circuit."""

    def __init__(self, channels: int = 128, n: int = 16):
        super().__init__()
        self.down, self.up = nn.Linear(channels, n), nn.Linear(n, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = h.mean(dim=(2, 3))  # global average pool: (B, 128)
        z_tilde = self.up(torch.cos(self.down(z)))  # (B, 16) -> (B, 128)
        self.last_z_tilde = z_tilde.detach()
        return h * z_tilde[:, :, None, None]  # Eq. 8, broadcast over 7 x 7


torch.manual_seed(1)
net_cos = UNet(gate=CosGate())
missing = net_cos.load_state_dict(
    net1.state_dict(), strict=False
).missing_keys  # same U-Net weights
seen = trace(net_cos, x1, t)
gate_row = next(r for r in seen if r["layer"] == "gate")
print(
    f"the gate sees {gate_row['input'][0]} and returns {gate_row['output']}; new parameters: "
    f"{missing}"
)
print(
    f"parameters: {count_parameters(net_cos):,} = {count_parameters(net1):,} + "
    f"{count_parameters(net_cos) - count_parameters(net1):,}"
)
assert count_parameters(net_cos) - count_parameters(net1) == (128 * 16 + 16) + (16 * 128 + 128)

loss = net_cos(x1, t).pow(2).mean()
loss.backward()
print(
    f"gradient norm reaching the Linear 128->16 in front of the non-linearity: "
    f"{net_cos.gate.down.weight.grad.norm():.2e}"
)
assert net_cos.gate.down.weight.grad.norm() > 0

# %% [markdown]
# **3. A gate that closes.** Multiplying the bottleneck by zero leaves the decoder only the skip
# connection, and with it the model no longer depends on $t$ at all: the time conditioning lives
# on the path the gate controls.


# %%
class ZeroGate(nn.Module):
    def forward(self, h):
        return h * 0


net_zero = UNet(gate=ZeroGate())
net_zero.load_state_dict(net1.state_dict())
with torch.no_grad():
    early = net_zero(x1, torch.zeros(B, dtype=torch.long))
    late = net_zero(x1, torch.full((B,), 999))
    moved = (
        (net1(x1, torch.zeros(B, dtype=torch.long)) - net1(x1, torch.full((B,), 999))).abs().max()
    )
print(
    "zero gate: largest change of the output between t = 0 and t = 999: "
    f"{(early - late).abs().max():.1e} "
    f"(classical model: {moved:.1e})"
)
assert torch.equal(early, late)

# %%
with torch.no_grad():
    net_cos(x1, torch.linspace(0, 999, B).long())
fig, ax = plt.subplots(figsize=(10, 1.2 + 0.35 * B))
im = ax.imshow(
    net_cos.gate.last_z_tilde,
    aspect="auto",
    cmap="RdBu_r",
    vmin=-net_cos.gate.last_z_tilde.abs().max(),
    vmax=net_cos.gate.last_z_tilde.abs().max(),
)
ax.set(
    xlabel="bottleneck channel",
    ylabel="image in batch",
    title=r"$\tilde z$ of the (untrained) CosGate: one multiplier per channel and image (Eq. 8)",
)
fig.colorbar(im, ax=ax, fraction=0.02)
fig.tight_layout()
plt.show()

# %% [markdown]
# **What we checked.** The U-Net has about 446 thousand parameters for one channel (1,730 more for three),
# two thirds of them in the residual block; its bottleneck is $128 \times 7 \times 7$; the gate
# receives and returns that map; an identity gate is the classical model; a custom gate plugs in,
# trains end to end, and controls all the timestep information the decoder receives.
