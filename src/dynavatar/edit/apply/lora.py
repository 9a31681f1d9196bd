"""LoRA adapters for the UNet's attention projections, written here rather than taken from peft.

A ``LoRALinear`` wraps each attention projection (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) of the
UNet. ``up`` starts at zero, so wrapping does not change the model; ``remove_lora`` puts the very same
original ``nn.Linear`` objects back, so the UNet is exactly what it was. Why not peft: these few
lines are all SDS personalisation needs, they keep the adapters in float32 under a half-precision
UNet, and they add no dependency.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import DynavatarError

__all__ = ["LoRALinear", "LoRASite", "inject_lora", "remove_lora", "lora_parameters"]


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * up(down(x))`` around a frozen ``nn.Linear``.

    The adapter is kept in float32 even when the base runs in half precision (small updates would
    round away in fp16); ``up`` starts at zero so the wrapped layer is bit-identical to ``base`` until
    it is trained, and ``down`` starts small and random so ``up`` gets a non-zero gradient.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None):
        super().__init__()
        self.base = base
        self.scale = float(alpha) / rank
        dev = base.weight.device
        self.down = nn.Parameter(torch.empty(rank, base.in_features, device=dev))  # [r, in]
        self.up = nn.Parameter(torch.zeros(base.out_features, rank, device=dev))  # [out, r]
        with torch.no_grad():
            init = torch.randn(rank, base.in_features, generator=generator)  # CPU generator: reproducible
            self.down.copy_(init / rank)

    # diffusers' attention processors read ``attn.to_q.weight.dtype``; answer for the base layer
    @property
    def weight(self) -> Tensor:
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def forward(self, x: Tensor) -> Tensor:  # x: [..., in] -> [..., out]
        delta = F.linear(F.linear(x.to(self.down.dtype), self.down), self.up)
        return self.base(x) + (self.scale * delta).to(x.dtype)


@dataclasses.dataclass
class LoRASite:
    """Where one adapter sits, so it can be taken out again: ``owner.<attr>`` or ``owner[index]``."""

    owner: nn.Module
    attr: str | int
    original: nn.Linear
    adapter: LoRALinear


def _attention_projections(unet: nn.Module) -> list[tuple[nn.Module, str | int, nn.Linear]]:
    """(owner, attribute or index, linear) of every to_q / to_k / to_v / to_out.0 of the UNet.

    Duck-typed on the attribute names of diffusers' ``Attention`` so no diffusers class is imported.
    """
    found = []
    for module in unet.modules():
        if not all(hasattr(module, a) for a in ("to_q", "to_k", "to_v", "to_out")):
            continue
        for attr in ("to_q", "to_k", "to_v"):
            lin = getattr(module, attr)
            if isinstance(lin, nn.Linear):
                found.append((module, attr, lin))
        out = module.to_out
        if isinstance(out, nn.ModuleList) and len(out) and isinstance(out[0], nn.Linear):
            found.append((out, 0, out[0]))
    return found


def inject_lora(unet: nn.Module, rank: int, alpha: float, seed: int) -> list[LoRASite]:
    gen = torch.Generator().manual_seed(seed)
    sites = []
    for owner, attr, lin in _attention_projections(unet):
        adapter = LoRALinear(lin, rank, alpha, generator=gen)
        _set_child(owner, attr, adapter)
        sites.append(LoRASite(owner, attr, lin, adapter))
    if not sites:
        raise DynavatarError("found no attention projections (to_q/to_k/to_v/to_out.0) in the UNet to adapt")
    return sites


def _set_child(owner: nn.Module, attr: str | int, child: nn.Module) -> None:
    if isinstance(attr, int):
        owner[attr] = child  # type: ignore[index]
    else:
        setattr(owner, attr, child)


def remove_lora(sites: list[LoRASite]) -> None:
    """Put the original ``nn.Linear`` layers back, last adapter first."""
    for site in reversed(sites):
        _set_child(site.owner, site.attr, site.original)


def lora_parameters(sites: list[LoRASite]) -> list[nn.Parameter]:
    """The trainable scalars of the adapters: (down, up) of each site, in order."""
    return [p for s in sites for p in (s.adapter.down, s.adapter.up)]
