"""A small patch discriminator that keeps the re-optimised region looking like the edited keyframes.

PatchGAN-style (a few strided convolutions, one real/fake logit per receptive-field patch), with
spectral normalisation for stable training on a handful of images, and hinge losses. It is trained
on patches of the edited keyframes ("real") against the current renders ("fake"), restricted to the
edit region, and its generator loss is added to the splat optimisation so regions that only some
keyframes constrain still look like the edit in every frame.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PatchDiscriminator", "discriminator_loss", "generator_loss"]


class PatchDiscriminator(nn.Module):
    def __init__(self, channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        blocks, c_in = [], 3
        for i in range(layers):
            c_out = channels * 2 ** i
            blocks += [sn(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        blocks.append(sn(nn.Conv2d(c_in, 1, 3, padding=1)))
        self.net = nn.Sequential(*blocks)
        self.stride = 2 ** layers

    def forward(self, images: Tensor) -> Tensor:
        """images [B, H, W, 3] in [0, 1] -> patch logits [B, H/stride, W/stride]"""
        return self.net(images.permute(0, 3, 1, 2) * 2 - 1)[:, 0]

    def patch_weights(self, masks: Tensor) -> Tensor:
        """Region masks [B, H, W] -> the fraction of each logit's patch inside the region."""
        return nn.functional.avg_pool2d(masks[:, None].float(), self.stride)[:, 0]


def _masked_mean(x: Tensor, w: Tensor) -> Tensor:
    return (x * w).sum() / w.sum().clamp_min(1e-6)


def discriminator_loss(d: PatchDiscriminator, real: Tensor, fake: Tensor, masks: Tensor) -> Tensor:
    """Hinge loss on region patches: real (edited keyframes) above +1, fake (renders) below -1."""
    w = d.patch_weights(masks)
    return (_masked_mean(torch.relu(1 - d(real)), w) + _masked_mean(torch.relu(1 + d(fake.detach())), w))


def generator_loss(d: PatchDiscriminator, fake: Tensor, masks: Tensor) -> Tensor:
    """What the splats minimise: make the region's patches look real."""
    return -_masked_mean(d(fake), d.patch_weights(masks))
