"""Vision transformers of DINO and Mugs (the timm/DeiT layout), returning every token of every block.

Parameter names follow the released checkpoints: ``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``.
Layers: ``block_0`` ... ``block_{depth-1}`` (each block's output) and ``last_norm`` (the final
LayerNorm applied to all tokens), all in tokens layout (N, 1 + (H/p)(W/p), width), class token first.
Pre-norm blocks, LayerNorm eps 1e-6, exact (erf) GELU, qkv with bias.
"""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import strip_prefix, unwrap_state_dict

# size -> (width, depth, heads)
VIT_SIZES = {"small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}


def vit_neurons(width: int, depth: int) -> Dict[str, int]:
    out = {f"block_{i}": width for i in range(depth)}
    out["last_norm"] = width
    return out


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, tokens, width)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, c))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, 4 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTFeatures(nn.Module):
    """DINO/Mugs ViT returning {block_i: tokens, last_norm: tokens} for square inputs of ``image_size``."""

    def __init__(self, width: int, depth: int, heads: int, patch: int = 16, image_size: int = 224):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        grid = image_size // patch
        self.patch_embed = PatchEmbed(patch, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, width))
        self.blocks = nn.ModuleList([Block(width, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        feats: Dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            feats[f"block_{i}"] = x
        feats["last_norm"] = self.norm(x)
        return feats


def backbone_state(ckpt, source: str) -> Dict[str, torch.Tensor]:
    """The backbone tensors of a DINO or Mugs checkpoint, in ``ViTFeatures`` names.

    Accepts a bare backbone state dict (DINO's ``*_pretrain.pth``), a ``{"state_dict": ...}`` wrapper
    (the Mugs weights on the reference hub), and full training checkpoints (``{"teacher": ...}`` with
    ``module.`` and ``backbone.`` prefixes; heads, relation blocks and other non-backbone keys are
    dropped because the backbone does not use them).
    """
    state = unwrap_state_dict(ckpt, source, ("teacher", "state_dict", "model_state_dict", "model"))
    state = strip_prefix(state, "module.")
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return state
