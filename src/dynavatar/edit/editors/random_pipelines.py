"""Diffusion pipelines with the real architectures and random weights, built offline from configs.

For benchmarks and tests on machines without the published weights: the compute (and so the time
per edit) of the full-size Stable Diffusion 1.5 InstructPix2Pix architecture is the same whatever
the weights, and the tiny variant runs the whole code path in CI in seconds. The tokenizer is a
character-level CLIP tokenizer written to a temporary folder (prompts are padded to 77 tokens, so
the text encoder's cost matches the real one).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

__all__ = ["SIZES", "char_clip_tokenizer", "random_ip2p_pipeline"]

SIZES = {
    # Stable Diffusion 1.5's published configs (UNet with InstructPix2Pix's 8 input channels).
    "sd15": dict(unet=dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                           cross_attention_dim=768, attention_head_dim=8,
                           down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                           up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
                 vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512,
                          down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4),
                 text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                           projection_dim=768)),
    "tiny": dict(unet=dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                           attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=32),
                 vae=dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=64, norm_num_groups=32,
                          down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2),
                 text=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                           projection_dim=32)),
}


def char_clip_tokenizer(folder: str | Path | None = None):
    """A CLIPTokenizer over printable ASCII characters (no merges), from files written here."""
    import transformers

    folder = Path(folder or tempfile.mkdtemp(prefix="dynavatar-tok-"))
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in (chr(i) for i in range(33, 127)):
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    if tok.vocab_size == 0:  # DESIGN §7: never let an empty tokenizer through silently
        raise RuntimeError("the character tokenizer came out empty")
    return tok


def random_ip2p_pipeline(size: str = "tiny", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                         seed: int = 0):
    """StableDiffusionInstructPix2PixPipeline with random weights of the ``size`` architecture."""
    import diffusers
    import transformers

    cfg = SIZES[size]
    torch.manual_seed(seed)
    tok = char_clip_tokenizer()
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=max(tok.vocab_size, 49408 if size == "sd15" else tok.vocab_size), max_position_embeddings=77,
        hidden_act="quick_gelu", **cfg["text"]))
    unet = diffusers.UNet2DConditionModel(in_channels=8, out_channels=4, **cfg["unet"])
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **cfg["vae"])
    sched = diffusers.EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                                      beta_schedule="scaled_linear", num_train_timesteps=1000)
    pipe = diffusers.StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    return pipe.to(device=device, dtype=dtype)
