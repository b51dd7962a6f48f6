"""The image tower of OpenAI CLIP's vision transformers (ViT-B/32, ViT-B/16, ViT-L/14).

Parameter names are those of the ``visual.`` part of OpenAI's checkpoints, without the prefix:
``conv1`` (patchify, no bias), ``class_embedding``, ``positional_embedding``, ``ln_pre``,
``transformer.resblocks.<i>.{ln_1, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, ln_2,
mlp.c_fc, mlp.c_proj}``, ``ln_post`` (``proj``, the joint-embedding projection, is not used).

Layers as in the reference: ``block_<i>``, the output of each residual block, all tokens (class
token first), tokens layout; ``last_norm``, ``ln_post`` of the class token only, tokens layout with
one token (N, 1, width). (The reference package reshaped ``last_norm`` so that the batch axis
became the token axis; for histograms this gives the same counts, for per-image Gaussians it was
wrong. We keep one token per image.)

OpenAI ships fp16 weights and the reference ran CLIP in fp16; vdna upcasts the weights to float32 and
runs in float32 (mixed precision is an option of the processor, never the default), so activations
differ from the reference's by fp16 rounding.
"""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

# version -> (patch, width, layers); heads = width // 64; input 224
CLIP_VITS = {"vit_b32": (32, 768, 12), "vit_b16": (16, 768, 12), "vit_l14": (14, 1024, 24)}


class MultiheadSelfAttention(nn.Module):
    """Self-attention with ``nn.MultiheadAttention``'s parameter names, batch-first."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5, dim=-1)
        return self.out_proj((attn @ v).transpose(1, 2).reshape(n, t, c))


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = MultiheadSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])


class CLIPViTFeatures(nn.Module):
    def __init__(self, patch: int, width: int, layers: int, image_size: int = 224):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        grid = image_size // patch
        self.conv1 = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, width // 64)
        self.ln_post = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.reshape(1, 1, -1).expand(x.shape[0], -1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        feats: Dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.transformer.resblocks):
            x = block(x)
            feats[f"block_{i}"] = x
        feats["last_norm"] = self.ln_post(x[:, :1, :])
        return feats


def clip_visual_state(ckpt, source: str) -> Dict[str, torch.Tensor]:
    """OpenAI CLIP weights (whole model, ``visual.`` prefix; from a JIT archive or a state dict) -> image tower."""
    from .checkpoints import strip_prefix, unwrap_state_dict

    state = strip_prefix(unwrap_state_dict(ckpt, source), "module.")
    if any(k.startswith("visual.") for k in state):
        state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    return state
