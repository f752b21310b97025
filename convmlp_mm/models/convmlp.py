"""ConvMLP: Hierarchical Convolutional MLPs for Vision.

Li, Hassani, Walton, Shi, 2021. https://arxiv.org/abs/2109.04454

A convolutional tokenizer (stride 4), a convolutional stage (stride 8), then three stages of
Conv-MLP blocks (channel MLP, 3x3 depthwise conv, channel MLP) on channels-last tensors, with
stride-2 3x3 convolutions between stages. Module names match the published checkpoints
(``convmlp_{s,m,l}_imagenet.pth``), so they load without renaming.
"""
from typing import Dict, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..registry import register_model
from .base import MultiStageBackbone
from .layers import (ConvTokenizer, LayerNorm, MLPBlock, MLPStage, conv_bn_relu, maybe_checkpoint, resolve_arch,
                     run_conv_bn)


# ----------------------------------------------------------------------------- blocks
class ConvBlock(nn.Sequential):
    """Residual bottleneck of the conv stage: ``x + [1x1, 3x3, 1x1 conv-BN-ReLU](x)``, NCHW.
    A ``Sequential`` so that its layers carry the published names (0, 1, 3, 4, 6, 7).

    Args:
        channels (int): Input and output channels (the tokenizer width C).
        hidden_channels (int): Bottleneck channels (dims[0]).
        with_cp (bool): Gradient checkpointing.
    """

    def __init__(self, channels: int, hidden_channels: int, with_cp: bool = False) -> None:
        super().__init__(*conv_bn_relu(channels, hidden_channels, 1),
                         *conv_bn_relu(hidden_channels, hidden_channels, 3),
                         *conv_bn_relu(hidden_channels, channels, 1))
        self.with_cp = with_cp

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + run_conv_bn(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return maybe_checkpoint(self, x, self.with_cp)


class ConvMLPBlock(MLPBlock):
    """Conv-MLP block on NHWC tensors:
    ``x + mlp1(LN1 x)``, then ``dwconv3x3(LN_c x)`` (no residual), then ``x + mlp2(LN2 x)``.

    Args:
        channels (int): Channels of the block.
        hidden_channels (int): Hidden channels of both channel MLPs.
        drop_path_rate (float): Stochastic depth of both MLP branches.
        with_cp (bool): Gradient checkpointing.
    """

    def __init__(self, channels: int, hidden_channels: int, drop_path_rate: float = 0.,
                 with_cp: bool = False) -> None:
        super().__init__(channels, hidden_channels, drop_path_rate, with_cp)
        self.connect = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.connect_norm = LayerNorm(channels)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.channel_mlp1(self.norm1(x)))
        x = self.connect_norm(x).permute(0, 3, 1, 2)  # NHWC -> NCHW view (N, C, H, W)
        x = self.connect(x).permute(0, 2, 3, 1)  # NCHW -> NHWC (N, H, W, C)
        return x + self.drop_path(self.channel_mlp2(self.norm2(x)))


class ConvDownsample(nn.Module):
    """Stride-2 3x3 convolution (with bias) on NHWC tensors.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x.permute(0, 3, 1, 2))  # NHWC -> NCHW (N, C, H, W)
        return x.permute(0, 2, 3, 1)  # NCHW -> NHWC (N, H/2, W/2, C')


# ----------------------------------------------------------------------------- stages
class ConvStage(nn.Module):
    """The convolutional stage: residual conv blocks at C, then a stride-2 3x3 conv C -> D0.

    Args:
        num_blocks (int): Number of :class:`ConvBlock`.
        channels (int): The tokenizer width C.
        out_channels (int): D0, also the bottleneck width of the blocks.
        with_cp (bool): Gradient checkpointing.
    """

    def __init__(self, num_blocks: int, channels: int, out_channels: int, with_cp: bool = False) -> None:
        super().__init__()
        self.conv_blocks = nn.Sequential(*[ConvBlock(channels, out_channels, with_cp) for _ in range(num_blocks)])
        self.downsample = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.conv_blocks(x))


# ------------------------------------------------------------------------------ model
@register_model
class ConvMLP(MultiStageBackbone):
    """ConvMLP backbone, returning F1-F4 (strides 4, 8, 16, 32) as contiguous NCHW tensors.

    F1 is the tokenizer output (C channels), F2 the conv stage's (dims[0]), F3 the first
    Conv-MLP stage's after its downsampling (dims[1]) and F4 the last stage's (dims[2]), where
    the published detection and segmentation models tap them. Any input size works; each
    stride-2 step gives ``ceil(H / 2)``.

    Args:
        arch (str | dict): ``'s'``/``'m'``/``'l'`` (or ``'small'``/``'medium'``/``'large'``), or a
            dict with the keys of :attr:`arch_zoo` entries. Defaults to ``'s'``.
        drop_path_rate (float): Stochastic depth: in every Conv-MLP stage it rises linearly
            from 0 to this value. The default 0.1 is the published schedule.
        out_indices, frozen_stages, norm_eval, with_cp, init_cfg: see
            :class:`~convmlp_mm.models.base.MultiStageBackbone`.

    Example:
        >>> model = ConvMLP('s').eval()
        >>> [tuple(f.shape) for f in model(torch.rand(1, 3, 224, 224))]
        [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
    """

    def __init__(self, arch: Union[str, dict] = 's', out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.1, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, init_cfg: Union[dict, None] = None) -> None:
        super().__init__(out_indices, frozen_stages, norm_eval, with_cp, init_cfg)
        self.arch = arch if isinstance(arch, str) else 'custom'
        cfg = resolve_arch(arch, self.arch_zoo, 'ConvMLP')
        c, dims, depths = cfg['channels'], cfg['dims'], cfg['depths']
        self.tokenizer = ConvTokenizer(c)
        self.conv_stages = ConvStage(cfg['conv_blocks'], c, dims[0], with_cp)
        self.stages = nn.ModuleList([
            MLPStage(ConvMLPBlock, depths[i], dims[i], cfg['mlp_ratio'], drop_path_rate,
                     ConvDownsample(dims[i], dims[i + 1]) if i + 1 < len(dims) else None, with_cp)
            for i in range(len(depths))
        ])
        self.feature_stages = [[self.tokenizer], [self.conv_stages], [self.stages[0]], [self.stages[1], self.stages[2]]]
        self.channels = (c, dims[0], dims[1], dims[2])
        self._finish_init()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        # Channels-last memory: the convolutions run without layout reorders (about 1.2-1.4x
        # faster on CPU than NCHW) and the conv stage's output is already NHWC in memory.
        x = x.contiguous(memory_format=torch.channels_last)
        f1 = self.tokenizer(x)  # (N, C, H/4, W/4), channels-last memory
        f2 = self.conv_stages(f1)  # (N, D0, H/8, W/8), channels-last memory
        x = self.stages[0](f2.permute(0, 2, 3, 1))  # NCHW -> NHWC, a view; out (N, H/16, W/16, D1)
        f3 = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW (N, D1, H/16, W/16)
        x = self.stages[2](self.stages[1](x))  # (N, H/32, W/32, D2)
        f4 = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW (N, D2, H/32, W/32)
        outs = (f1.contiguous(), f2.contiguous(), f3, f4)
        return tuple(outs[i] for i in self.out_indices)

    # ------------------------------------------------------------------------ arch table
    arch_zoo: Dict[str, dict] = {
        **dict.fromkeys(['s', 'small'], dict(channels=64, conv_blocks=2, depths=(2, 4, 2),
                                             dims=(128, 256, 512), mlp_ratio=2)),
        **dict.fromkeys(['m', 'medium'], dict(channels=64, conv_blocks=3, depths=(3, 6, 3),
                                              dims=(128, 256, 512), mlp_ratio=3)),
        **dict.fromkeys(['l', 'large'], dict(channels=96, conv_blocks=3, depths=(4, 8, 3),
                                             dims=(192, 384, 768), mlp_ratio=3)),
    }


# ----------------------------------------------------------------- checkpoint converter
# The backbone's module names are the published ones, so a published backbone state dict
# needs no renaming (``backbone_state_dict`` in base.py unwraps it and drops the head). Our
# mmpretrain classifier keeps the head apart; these two map between the layouts.
def published_to_mmpretrain(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Published ImageNet state dict -> our mmpretrain classifier's
    (``backbone.*``, ``head.norm.*``, ``head.fc.*``). An already converted one is returned as is."""
    if any(k.startswith('backbone.') for k in state_dict):
        return dict(state_dict)
    out = {}
    for key, value in state_dict.items():
        if key.startswith('norm.'):
            out['head.' + key] = value
        elif key.startswith('head.'):
            out['head.fc.' + key[len('head.'):]] = value
        else:
            out['backbone.' + key] = value
    return out


def mmpretrain_to_published(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The inverse of :func:`published_to_mmpretrain`."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith('backbone.'):
            out[key[len('backbone.'):]] = value
        elif key.startswith('head.norm.'):
            out[key[len('head.'):]] = value
        elif key.startswith('head.fc.'):
            out['head.' + key[len('head.fc.'):]] = value
        else:
            raise KeyError(f'{key!r} is not a key of the ConvMLP classifier')
    return out
