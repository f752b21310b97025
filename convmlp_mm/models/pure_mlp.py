"""Pure-MLP: the baseline of the ConvMLP paper's ablation (Table 2, first row).

Li, Hassani, Walton, Shi, "ConvMLP: Hierarchical Convolutional MLPs for Vision", 2021.
https://arxiv.org/abs/2109.04454

"One patch converter and a sequence of channel MLPs": ConvMLP's convolutional tokenizer,
then four stages of channel-MLP blocks (the first at the tokenizer width, in place of
ConvMLP's conv stage), with Swin-style patch merging in place of each stride-2 convolution.
No code was published; this follows the paper's description and reproduces its parameter
counts and MACs. It uses ConvMLP's arch table (depths, dims, MLP ratios).
"""
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..registry import register_model
from .base import MultiStageBackbone
from .convmlp import ConvMLP
from .layers import ConvTokenizer, MLPBlock, MLPStage, PatchMerging, resolve_arch


# ------------------------------------------------------------------------------ model
@register_model
class PureMLP(MultiStageBackbone):
    """Pure-MLP baseline backbone, returning F1-F4 (strides 4, 8, 16, 32) as contiguous NCHW
    tensors with ConvMLP's channels: F1 the tokenizer's (C), F2-F4 the outputs of stages 0-1
    after patch merging and of the last stage (dims[0], dims[1], dims[2]).

    Args:
        arch (str | dict): A ConvMLP arch (``'s'``/``'m'``/``'l'``, aliases, or a dict); see
            :attr:`ConvMLP.arch_zoo`. ``conv_blocks`` is the number of MLP blocks in stage 0.
        drop_path_rate (float): Stochastic depth, rising linearly from 0 to this in every stage.
        out_indices, frozen_stages, norm_eval, with_cp, init_cfg: see
            :class:`~convmlp_mm.models.base.MultiStageBackbone`.
    """

    def __init__(self, arch: Union[str, dict] = 's', out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.1, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, init_cfg: Union[dict, None] = None) -> None:
        super().__init__(out_indices, frozen_stages, norm_eval, with_cp, init_cfg)
        self.arch = arch if isinstance(arch, str) else 'custom'
        cfg = resolve_arch(arch, self.arch_zoo, 'PureMLP')
        c, dims, ratio = cfg['channels'], cfg['dims'], cfg['mlp_ratio']
        widths = (c, *dims)  # stage i runs at widths[i] and merges to widths[i + 1]
        depths = (cfg['conv_blocks'], *cfg['depths'])
        self.tokenizer = ConvTokenizer(c)
        self.stages = nn.ModuleList([
            MLPStage(MLPBlock, depths[i], widths[i], ratio, drop_path_rate,
                     PatchMerging(widths[i], widths[i + 1]) if i + 1 < len(widths) else None, with_cp)
            for i in range(len(depths))
        ])
        self.feature_stages = [[self.tokenizer], [self.stages[0]], [self.stages[1]], [self.stages[2], self.stages[3]]]
        self.channels = widths
        self._finish_init()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        x = x.contiguous(memory_format=torch.channels_last)  # as in ConvMLP: convs without reorders
        f1 = self.tokenizer(x)  # (N, C, H/4, W/4), channels-last memory
        x = self.stages[0](f1.permute(0, 2, 3, 1))  # NCHW -> NHWC, a view; out (N, H/8, W/8, D0)
        f2 = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW (N, D0, H/8, W/8)
        x = self.stages[1](x)  # (N, H/16, W/16, D1)
        f3 = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW (N, D1, H/16, W/16)
        x = self.stages[3](self.stages[2](x))  # (N, H/32, W/32, D2)
        f4 = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW (N, D2, H/32, W/32)
        outs = (f1.contiguous(), f2, f3, f4)
        return tuple(outs[i] for i in self.out_indices)

    # The numbers are ConvMLP's (the paper scales both families alike).
    arch_zoo = ConvMLP.arch_zoo
