"""Residual-Attention UNet++ (Li et al., Applied Sciences 2022, 12, 7149) built from MONAI blocks.

UNet++ (Zhou et al. 2018) nested, densely connected skip paths, whose nodes are residual units
(:class:`monai.networks.blocks.ResidualUnit`), with an additive attention gate (Oktay et al. 2018, the gate
of :class:`monai.networks.nets.AttentionUnet`) on the skip input of every decoder node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from monai.networks.layers.factories import Pool

__all__ = ["AttentionUNetPlusPlus", "AttentionGate", "NestedNode", "match_spatial_size"]


def match_spatial_size(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Crop (at the end) or replicate-pad (at the end) the spatial dims of ``x`` to those of ``ref``.

    Args:
        x: ``(N, C, *spatial_x)``.
        ref: ``(N, C', *spatial)``, only its spatial shape is used.

    Returns:
        ``(N, C, *spatial)``. With 2x max pooling (floor) followed by a stride-2 transposed convolution
        the up-sampled map is at most one voxel smaller than the skip, so this only ever pads by one.
    """
    for d in range(2, x.dim()):
        if x.shape[d] > ref.shape[d]:
            x = x.narrow(d, 0, ref.shape[d])
    pads: List[int] = []
    for d in range(x.dim() - 1, 1, -1):  # F.pad lists the last dim first
        pads.append(0)
        pads.append(ref.shape[d] - x.shape[d])
    if sum(pads) > 0:
        x = F.pad(x, pads, mode="replicate")
    return x


class AttentionGate(nn.Module):
    """Additive attention gate ``x * sigmoid(psi(relu(W_g g + W_x x)))`` (Oktay et al. 2018).

    The same gate as ``monai.networks.nets.attentionunet.AttentionBlock``, except that its normalisation
    follows the network's ``norm`` instead of being fixed to batch norm (so an instance-normalised network
    has no batch statistics anywhere, which keeps attacks in train mode and batch-1 training well defined).

    Args:
        spatial_dims: 2 or 3.
        gate_channels: channels of the gating signal ``g``.
        skip_channels: channels of the gated input ``x``.
        inter_channels: channels of the intermediate 1x1 projections.
        norm: MONAI norm name/tuple (``"INSTANCE"``, ``"BATCH"``, ...).
        dropout: dropout rate of the projections.
    """

    def __init__(
        self,
        spatial_dims: int,
        gate_channels: int,
        skip_channels: int,
        inter_channels: int,
        norm: str | tuple = "INSTANCE",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        kw = dict(spatial_dims=spatial_dims, kernel_size=1, act=None, norm=norm, dropout=dropout, padding=0)
        self.w_g = Convolution(in_channels=gate_channels, out_channels=inter_channels, **kw)
        self.w_x = Convolution(in_channels=skip_channels, out_channels=inter_channels, **kw)
        self.psi = nn.Sequential(Convolution(in_channels=inter_channels, out_channels=1, **kw), nn.Sigmoid())
        self.relu = nn.ReLU()

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``g``: ``(N, gate_channels, *S)``, ``x``: ``(N, skip_channels, *S)`` -> ``(N, skip_channels, *S)``."""
        alpha = self.psi(self.relu(self.w_g(g) + self.w_x(x)))  # (N, 1, *S) in (0, 1)
        return x * alpha


def _conv_block(
    spatial_dims: int, in_channels: int, out_channels: int, num_res_units: int, act, norm, dropout: float
) -> nn.Module:
    """A residual unit with ``num_res_units`` conv subunits, or two plain convolutions when it is 0."""
    if num_res_units > 0:
        return ResidualUnit(
            spatial_dims, in_channels, out_channels, subunits=num_res_units, act=act, norm=norm, dropout=dropout
        )
    return nn.Sequential(
        Convolution(spatial_dims, in_channels, out_channels, act=act, norm=norm, dropout=dropout),
        Convolution(spatial_dims, out_channels, out_channels, act=act, norm=norm, dropout=dropout),
    )


class NestedNode(nn.Module):
    """Decoder node ``X^{i,j}`` (``j >= 1``) of the nested skip paths.

    ``X^{i,j} = H([AG(u, [X^{i,0}, ..., X^{i,j-1}]), u])`` with ``u = Up(X^{i+1,j-1})`` a stride-2 transposed
    convolution (padded to the skip size for odd sizes), ``AG`` one attention gate over the concatenated dense
    skips gated by ``u``, and ``H`` a residual unit.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels ``f_i`` of level ``i``.
        lower_channels: feature channels ``f_{i+1}`` of level ``i + 1``.
        num_skips: ``j``, the number of same-level inputs.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        lower_channels: int,
        num_skips: int,
        num_res_units: int,
        act,
        norm,
        dropout: float,
    ) -> None:
        super().__init__()
        self.up = UpSample(spatial_dims, lower_channels, channels, scale_factor=2, mode="deconv")
        self.gate = AttentionGate(
            spatial_dims, channels, num_skips * channels, max(channels // 2, 1), norm=norm, dropout=dropout
        )
        self.block = _conv_block(spatial_dims, (num_skips + 1) * channels, channels, num_res_units, act, norm, dropout)

    def forward(self, lower: torch.Tensor, skips: List[torch.Tensor]) -> torch.Tensor:
        """``lower``: ``(N, f_{i+1}, *S_{i+1})``; ``skips``: ``j`` tensors ``(N, f_i, *S_i)`` -> ``(N, f_i, *S_i)``."""
        skip = torch.cat(skips, dim=1)
        up = match_spatial_size(self.up(lower), skip)
        return self.block(torch.cat([self.gate(up, skip), up], dim=1))


class AttentionUNetPlusPlus(nn.Module):
    """Residual-Attention UNet++ for 2D/3D segmentation (Li et al. 2022).

    Encoder ``X^{i,0}``: a residual unit per level, 2x max pooling between levels. Decoder: every node
    ``X^{i,j}`` (``i + j <= L``, ``L = len(features) - 1``) is a :class:`NestedNode`: it up-samples
    ``X^{i+1,j-1}`` with a stride-2 transposed convolution, gates the concatenation of all earlier nodes of
    its level ``X^{i,0..j-1}`` with an :class:`AttentionGate` driven by that up-sampled map, and fuses both
    with a residual unit. A 1x1 convolution head maps ``X^{0,L}`` (and, with deep supervision, every
    ``X^{0,j}``) to ``out_channels`` logits.

    Any spatial size works, odd or even: pooling floors, and the up-sampled map is replicate-padded by one
    voxel at the far end where the skip is odd-sized (:func:`match_spatial_size`), so the output spatial shape
    always equals the input's. Each spatial size must be at least ``2 ** L`` (and with instance norm, training
    needs more than one voxel at the deepest level, i.e. sizes ``>= 2 ** (L + 1)``).

    The module is scriptable with ``torch.jit.script`` (so ``monai.bundle ckpt_export`` works).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes; logits, no activation).
        features: channels per level, at least two levels; ``len(features) - 1`` poolings.
        deep_supervision: return the heads of all ``X^{0,j}`` instead of only the last one.
        num_res_units: conv subunits per residual unit (as in ``monai.networks.nets.UNet``); 0 uses two plain
            convolutions per node instead of a residual unit.
        act: MONAI activation name/tuple, e.g. ``"PRELU"``, ``"RELU"``, ``("leakyrelu", {"negative_slope": 0.1})``.
        norm: MONAI norm name/tuple, e.g. ``"INSTANCE"``, ``"BATCH"``.
        dropout: dropout rate in ``[0, 1)``.

    Shapes:
        input ``(N, in_channels, *spatial)`` with ``len(spatial) == spatial_dims``; output
        ``(N, out_channels, *spatial)``, or with ``deep_supervision=True`` a list of ``L`` such tensors,
        deepest path first: ``[head(X^{0,L}), head(X^{0,L-1}), ..., head(X^{0,1})]`` (the order of
        ``monai.networks.nets.BasicUNetPlusPlus`` and ``monai.losses.DeepSupervisionLoss``, whose first
        element gets the largest weight). With deep supervision the list is returned in eval mode too;
        use ``output[0]`` as the prediction.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 2,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        deep_supervision: bool = False,
        num_res_units: int = 2,
        act: str | tuple = "PRELU",
        norm: str | tuple = "INSTANCE",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        features = tuple(features)
        if len(features) < 2 or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in features):
            raise ValueError(f"features must be at least two positive ints (channels per level), got {features!r}")
        if isinstance(num_res_units, bool) or not isinstance(num_res_units, int) or num_res_units < 0:
            raise ValueError(f"num_res_units must be an int >= 0, got {num_res_units!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")

        self.spatial_dims = spatial_dims
        self.depth = len(features) - 1
        self.deep_supervision = bool(deep_supervision)
        self.min_size = 2**self.depth

        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        block = dict(num_res_units=num_res_units, act=act, norm=norm, dropout=dropout)
        encoder_in = (in_channels,) + features[:-1]
        self.encoder = nn.ModuleList([_conv_block(spatial_dims, c, f, **block) for c, f in zip(encoder_in, features)])
        # decoder nodes in computation order: column j = 1..L, level i = 0..L-j
        nodes: list[nn.Module] = []
        levels: list[int] = []
        for j in range(1, self.depth + 1):
            for i in range(0, self.depth - j + 1):
                nodes.append(NestedNode(spatial_dims, features[i], features[i + 1], j, **block))
                levels.append(i)
        self.decoder = nn.ModuleList(nodes)
        self.node_levels: List[int] = levels
        n_heads = self.depth if self.deep_supervision else 1
        head = dict(spatial_dims=spatial_dims, in_channels=features[0], out_channels=out_channels, kernel_size=1)
        self.heads = nn.ModuleList([Convolution(conv_only=True, **head) for _ in range(n_heads)])

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """``(N, in_channels, *spatial)`` -> ``(N, out_channels, *spatial)`` (a list of them with deep supervision)."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"input must be (N, C, *spatial) with {self.spatial_dims} spatial dims, got shape {list(x.shape)}"
            )
        for d in range(2, x.dim()):
            if x.shape[d] < self.min_size:
                raise ValueError(
                    f"every spatial size must be >= {self.min_size} (2 ** number of poolings), "
                    f"got shape {list(x.shape)}"
                )
        grid: List[List[torch.Tensor]] = []  # grid[i][j] = X^{i,j}
        for i, enc in enumerate(self.encoder):
            if i > 0:
                x = self.pool(x)
            x = enc(x)
            grid.append([x])
        for k, node in enumerate(self.decoder):
            i = self.node_levels[k]
            column = grid[i]
            out = node(grid[i + 1][len(column) - 1], column)
            column.append(out)
        top = grid[0]
        if not self.deep_supervision:
            for head in self.heads:  # the single head (TorchScript cannot index a ModuleList with a variable)
                return head(top[self.depth])
        outputs: List[torch.Tensor] = []
        for j, head in enumerate(self.heads):
            outputs.append(head(top[self.depth - j]))
        return outputs
