"""Tiny, seeded Stable-Diffusion components (CLIP tokenizer from a local vocabulary, text encoder,
UNet, VAE, scheduler) so the SDS code path runs offline in tests (DESIGN.md §4)."""

from __future__ import annotations

import json
import string

import torch

RES = 16  # SDS resolution: images are resized to 16x16; the tiny VAE has 2 blocks -> factor 2
LAT = RES // 2  # -> 8x8 latents, the tiny UNet's sample_size


def write_tiny_tokenizer(d):
    """A character-level CLIP BPE vocabulary (plus a few merges) written as vocab.json + merges.txt."""
    chars = list(string.ascii_lowercase + string.digits + ",.'-")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = ["#version: 0.2"]
    for a, b in [("v", "i"), ("vi", "e"), ("vie", "w</w>"), ("f", "r"), ("fr", "o"), ("fro", "n"), ("fron", "t</w>")]:
        merges.append(f"{a} {b}")
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("\n".join(merges) + "\n")
    return d


def tiny_components(tokenizer_dir, seed: int = 0):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=1000,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    unet = UNet2DConditionModel(
        sample_size=LAT, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), latent_channels=4,
        layers_per_block=1, norm_num_groups=32, sample_size=RES)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
