"""The ``ifqa++`` ViT: a masked-autoencoder ViT-H/14 run without masking, one value per pixel.

State-dict compatible with the published ``IFQA++_Metric.pth`` (494 tensors). The transformer
block reproduces timm's ``vision_transformer.Block`` (same key names, same maths: pre-norm,
``x + attn(norm1(x))``, ``x + mlp(norm2(x))``, exact GELU, LayerNorm eps 1e-6, qkv bias) so the
package does not need timm; ``tests/test_models.py`` checks the equivalence when timm is present.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Discriminator


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with timm's key names (norm1, attn, norm2, mlp)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def sincos_pos_embed(dim: int, grid: int, cls_token: bool = True) -> np.ndarray:
    """Fixed 2-D sine-cosine position table, (grid*grid [+1], dim), class-token row zero.

    Half the channels encode the column, half the row; each half is [sin | cos] over
    ``dim/4`` frequencies ``1 / 10000**(i / (dim/4))``.

    Raises:
        ValueError: ``dim`` is not a multiple of 4.

    Example:
        >>> table = sincos_pos_embed(8, grid=3)
        >>> table.shape, bool((table[0] == 0).all())      # 1 + 3*3 rows; class token first
        ((10, 8), True)
        >>> table[1].tolist()                            # position (0, 0): sin 0, cos 0
        [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    """
    if dim % 4:
        raise ValueError(f"position-embedding width must be a multiple of 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
    rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid), indexing="ij")

    def enc(pos: np.ndarray) -> np.ndarray:
        ang = pos.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)

    table = np.concatenate([enc(cols), enc(rows)], axis=1)
    if cls_token:
        table = np.concatenate([np.zeros((1, dim)), table], axis=0)
    return table.astype(np.float32)


class IFQAViT(Discriminator):
    """The original IFQA++ discriminator: (B,3,224,224) in [-1,1] -> (B,1,224,224).

    Defaults are the published ViT-H/14 (656.9 M parameters); smaller settings build the same
    structure for tests.

    Args:
        img_size: input side; a multiple of ``patch``.
        patch: patch side; each token predicts the ``patch * patch`` pixels it covers.
        dim, depth, heads: the encoder's width, block count and attention heads.
        decoder_dim, decoder_depth, decoder_heads: the same for the decoder.
        mlp_ratio: hidden width of each block's MLP, times the block's width.

    Raises:
        ValueError: ``img_size`` is not a multiple of ``patch``.

    Shape:
        - input: :math:`(B, 3, S, S)` in [-1, 1], ``S = img_size``
        - output: :math:`(B, 1, S, S)` realness in [0, 1]

    Example:
        A tiny untrained configuration (the published weights load with
        :func:`ifqa_loss.load_discriminator` ``("ifqa++")``):

        >>> net = IFQAViT(img_size=28, patch=14, dim=32, depth=1, heads=2,
        ...               decoder_dim=16, decoder_depth=1, decoder_heads=2)
        >>> net.grid, net.decoder_pred.out_features         # 2x2 tokens of 14*14 pixels
        (2, 196)
        >>> _ = torch.manual_seed(0)
        >>> with torch.no_grad():
        ...     net(torch.rand(2, 3, 28, 28) * 2 - 1).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(
        self,
        img_size: int = 224,
        patch: int = 14,
        dim: int = 1280,
        depth: int = 32,
        heads: int = 16,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if img_size % patch:
            raise ValueError(f"img_size {img_size} is not a multiple of the patch size {patch}")
        self.native_size = img_size
        self.patch = patch
        self.grid = img_size // patch
        n = self.grid * self.grid
        # Attribute order fixes the state-dict key order of the released checkpoint.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim), requires_grad=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, n + 1, decoder_dim), requires_grad=False
        )
        self.patch_embed = PatchEmbed(patch, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, decoder_heads, mlp_ratio) for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, patch * patch)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        self.pos_embed.copy_(
            torch.from_numpy(sincos_pos_embed(self.pos_embed.shape[-1], self.grid))
        )
        self.decoder_pos_embed.copy_(
            torch.from_numpy(sincos_pos_embed(self.decoder_pos_embed.shape[-1], self.grid))
        )
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid per-pixel logits, (B,1,S,S)."""
        b = x.shape[0]
        t = self.patch_embed(x) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        t = torch.cat([cls, t], dim=1)
        for blk in self.blocks:
            t = blk(t)
        t = self.decoder_embed(self.norm(t)) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            t = blk(t)
        t = self.decoder_pred(self.decoder_norm(t))[:, 1:]
        # Token h*g + w holds pixels (h*p + i, w*p + j) at value index i*p + j.
        g, p = self.grid, self.patch
        t = t.reshape(b, g, g, p, p).permute(0, 1, 3, 2, 4)
        return t.reshape(b, 1, g * p, g * p)
