"""ConvMLP: Hierarchical Convolutional MLPs for Vision, and its ablations (Pure-MLP included).

Li, Hassani, Walton, Shi, 2021. https://arxiv.org/abs/2109.04454

A convolutional tokenizer (stride 4), a stem stage (stride 8), then three stages of MLP
blocks on channels-last tensors with 2x downsampling between them. Three arch switches name
the paper's Table 2 ablations:

- ``stem_stage``: ``'conv'`` (the published conv stage: residual 1x1-3x3-1x1 blocks and a
  stride-2 3x3 conv), ``'conv_v1'`` (the conv stage of Table 2's rows 2-6, reconstructed) or
  ``'mlp'`` (channel-MLP blocks at the tokenizer width, then a ``downsample`` step);
- ``downsample``: ``'conv'`` (stride-2 3x3 conv with bias) or ``'patch_merging'`` (Swin's),
  for every stride-2 step after the stem stage (and the ``'mlp'`` stem stage's own);
- ``dwconv``: ``True`` (the Conv-MLP block: a 3x3 depthwise conv between the two channel
  MLPs) or ``False`` (two channel MLPs).

The published ConvMLP is ``conv``/``conv``/``True``; the paper's Pure-MLP baseline is all three
off (``mlp``/``patch_merging``/``False``), registered as :class:`PureMLP`. Module names match
the published checkpoints (``convmlp_{s,m,l}_imagenet.pth``) and, for the ``'mlp'`` stem
stage, the Pure-MLP layout of earlier releases (stem stage at ``stages.0``), so both load
without renaming.
"""
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from .layers import (MIN_SIZE, ConvDownsample, ConvTokenizer, LayerNorm, MLPBlock, MLPStage, PatchMerging,
                     NormFactory, check_images, check_out_indices, conv_bn_relu, maybe_checkpoint, resolve_arch,
                     torch_norm)
from .weights import backbone_state_dict, load_state_dict_exactly, prefixed_state_dict, read_checkpoint

torch.fx.wrap('check_images')  # a leaf of torch.fx graphs: its branches depend on the input


# ----------------------------------------------------------------------------- blocks
class ConvBlock(nn.Sequential):
    """Residual bottleneck of the conv stage: ``x + [1x1, 3x3, 1x1 conv-BN-ReLU](x)``, NCHW.
    A ``Sequential`` so that its layers carry the published names (0, 1, 3, 4, 6, 7).

    Args:
        channels (int): Input and output channels (the tokenizer width C).
        hidden_channels (int): Bottleneck channels (dims[0]).
        norm (callable): ``norm(channels)`` -> the norm layer after each conv. Defaults to BatchNorm.
        with_cp (bool): Gradient checkpointing.
    """

    def __init__(self, channels: int, hidden_channels: int, norm: NormFactory = nn.BatchNorm2d,
                 with_cp: bool = False) -> None:
        super().__init__(*conv_bn_relu(channels, hidden_channels, 1, norm),
                         *conv_bn_relu(hidden_channels, hidden_channels, 3, norm),
                         *conv_bn_relu(hidden_channels, channels, 1, norm))
        self.with_cp = with_cp

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self:
            out = layer(out)
        return x + out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._forward(x)
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


# ----------------------------------------------------------------------------- stages
class ConvStage(nn.Module):
    """The published convolutional stage (``stem_stage='conv'``): residual conv blocks at C,
    then a stride-2 3x3 conv C -> D0. NCHW in and out.

    Args:
        num_blocks (int): Number of :class:`ConvBlock`.
        channels (int): The tokenizer width C.
        out_channels (int): D0, also the bottleneck width of the blocks.
        norm (callable): ``norm(channels)`` -> the norm layer after each conv of the blocks (BatchNorm).
        with_cp (bool): Gradient checkpointing.
    """

    def __init__(self, num_blocks: int, channels: int, out_channels: int, norm: NormFactory = nn.BatchNorm2d,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.conv_blocks = nn.Sequential(*[ConvBlock(channels, out_channels, norm, with_cp)
                                           for _ in range(num_blocks)])
        self.downsample = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.conv_blocks(x))


class ConvStageV1(nn.Sequential):
    """The conv stage of Table 2's rows 2-6 (``stem_stage='conv_v1'``): 3x3 conv-BN-ReLU C -> C,
    3x3 conv-BN-ReLU C -> D0 (bias-free convs), then a 3x3 max pool with stride 2. NCHW.

    A reconstruction: this stage was never published. It is fixed by Table 2's numbers with the
    S widths (C 64, D0 128): it adds 110,976 parameters (7.88 M -> 7.89 M over Pure-MLP's MLP
    stage and patch merging) and the GMACs 1.47 -> 1.59 (rows 1 -> 2); the max pool, as in the
    tokenizer, is the only parameter-free stride-2 step that matches both.

    Args:
        channels (int): The tokenizer width C.
        out_channels (int): D0.
        norm (callable): ``norm(channels)`` -> the norm layer after each conv. Defaults to BatchNorm.
    """

    def __init__(self, channels: int, out_channels: int, norm: NormFactory = nn.BatchNorm2d) -> None:
        super().__init__(*conv_bn_relu(channels, channels, 3, norm), *conv_bn_relu(channels, out_channels, 3, norm),
                         nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


# ------------------------------------------------------------------------------ model
#: Table 1's sizes: tokenizer width C, conv (or stem MLP) blocks, MLP-stage depths and widths, MLP ratio.
SIZES = {
    's': dict(channels=64, conv_blocks=2, depths=(2, 4, 2), dims=(128, 256, 512), mlp_ratio=2),
    'm': dict(channels=64, conv_blocks=3, depths=(3, 6, 3), dims=(128, 256, 512), mlp_ratio=3),
    'l': dict(channels=96, conv_blocks=3, depths=(4, 8, 3), dims=(192, 384, 768), mlp_ratio=3),
}


class ConvMLP(nn.Module):
    """ConvMLP backbone, returning F1-F4 (strides 4, 8, 16, 32) as contiguous NCHW tensors.

    Four feature stages; feature stage ``i`` produces F(i+1), where the published detection and
    segmentation models tap them:

    =====  ==================  ======  =================================================
    stage  output              stride  modules (conv stem stages / ``'mlp'`` stem stage)
    =====  ==================  ======  =================================================
    0      F1, C channels      4       tokenizer / tokenizer
    1      F2, dims[0]         8       conv_stages / stages.0
    2      F3, dims[1]         16      stages.0 / stages.1
    3      F4, dims[2]         32      stages.1 + stages.2 / stages.2 + stages.3
    =====  ==================  ======  =================================================

    F(i+1) is the output of the module :attr:`feature_modules` ``[i]`` names (the last one of each
    row: the stages take and return NCHW views), so forward hooks and the feature extractors that
    take module names find F1-F4. ``out_indices`` picks among F1-F4 and ``frozen_stages`` counts
    in the same stages. Any input of at least 32x32 works; each stride-2 step gives
    ``ceil(H / 2)``; torch.compile and torch.export keep batch, height and width symbolic (one
    program for all sizes). A plain ``nn.Module``
    (torch only); with mmengine installed, the registered ``ConvMLP`` of configs is
    :class:`convmlp_mm.mm.ConvMLP`, this class with ``init_cfg``.

    Args:
        arch (str | dict): A name of :attr:`arch_zoo` (``'s'``/``'m'``/``'l'``, the Pure-MLP
            sizes ``'pure-mlp-s'``..., Table 2's rows ``'table2-row1'``...``'table2-row7'``), or a
            dict with the keys of its entries; ``stem_stage``, ``downsample`` and ``dwconv`` may
            be left out (defaults: the published ``'conv'``, ``'conv'``, ``True``). See the module
            docstring for the switches. Defaults to ``'s'``.
        out_indices (int | Sequence[int]): Which of F1-F4 ``forward`` returns (0-3; negative
            values count from the end). Defaults to all four.
        drop_path_rate (float): Stochastic depth: in every MLP stage it rises linearly from 0 to
            this value. The default 0.1 is the published schedule.
        frozen_stages (int): Stages 0..frozen_stages get ``requires_grad=False`` and stay in
            eval mode. -1 (default) freezes nothing.
        norm_eval (bool): Keep every BatchNorm in eval mode while training (frozen running
            statistics; affine parameters still train unless frozen). Defaults to False.
        with_cp (bool): Gradient checkpointing per block: less memory, same outputs and
            gradients, one more forward per block in backward. Defaults to False.
        in_channels (int): Channels of the input images. Defaults to 3 (the published models).
        norm_cfg (dict): The norm after every convolution of the tokenizer and the conv stem
            stage, as mm backbones take it: ``dict(type='BN')`` (default: the published
            BatchNorm), ``'SyncBN'``, ``dict(type='GN', num_groups=32)``, ... (built by
            :attr:`build_norm`: torch's layers of :data:`~convmlp_mm.models.layers.TORCH_NORMS`
            here, any norm of mmcv's registry in the registered models). The state-dict keys
            stay the published ones.
        pretrained (str, optional): A checkpoint (path or URL) to load with
            :meth:`load_pretrained` once the model is built. The registered models turn it into
            ``init_cfg=dict(type='Pretrained', checkpoint=...)``, as mm backbones do.

    Example:
        >>> model = ConvMLP('s').eval()
        >>> [tuple(f.shape) for f in model(torch.rand(1, 3, 224, 224))]
        [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
    """
    strides = (4, 8, 16, 32)
    num_stages = 4
    #: The smallest input height and width: the stride of F4.
    min_size = MIN_SIZE
    #: Memory format of the maps ``forward`` returns: contiguous NCHW; channels-last after
    #: :func:`~convmlp_mm.models.fusion.prepare_inference` (the layout they are computed in).
    out_memory_format = torch.contiguous_format
    #: The allowed values of the three switches.
    switches = dict(stem_stage=('conv', 'conv_v1', 'mlp'), downsample=('conv', 'patch_merging'), dwconv=(True, False))
    #: What a custom arch dict gets for the switches it leaves out.
    switch_defaults = dict(stem_stage='conv', downsample='conv', dwconv=True)
    #: ``build_norm(norm_cfg, channels)`` -> the norm layer of ``norm_cfg`` (torch's layers here).
    build_norm = staticmethod(torch_norm)

    def __init__(self, arch: Union[str, dict] = 's', out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.1, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, in_channels: int = 3, norm_cfg: dict = dict(type='BN'),
                 pretrained: Optional[str] = None) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
            raise ValueError(f'in_channels={in_channels!r} is invalid: expected a positive integer (3 for RGB)')
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages < self.num_stages:
            raise ValueError(f'frozen_stages={frozen_stages!r} is invalid: expected an integer in '
                             f'[-1, {self.num_stages - 1}] (-1 freezes nothing)')
        if not isinstance(norm_cfg, dict) or 'type' not in norm_cfg:
            raise ValueError(f"norm_cfg={norm_cfg!r} is invalid: expected a dict with a 'type', e.g. dict(type='BN')")
        if pretrained is not None and not isinstance(pretrained, str):
            raise ValueError(f'pretrained={pretrained!r} is invalid: expected the path or URL of a checkpoint, or None')
        self.in_channels = in_channels
        self.norm_cfg = dict(norm_cfg)
        self.out_indices = check_out_indices(out_indices, self.num_stages)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.arch = arch if isinstance(arch, str) else 'custom'
        cfg = resolve_arch(arch, self.arch_zoo, type(self).__name__, self.switches, self.switch_defaults)
        self.arch_cfg = cfg
        c, dims, ratio = cfg['channels'], cfg['dims'], cfg['mlp_ratio']
        downsample = ConvDownsample if cfg['downsample'] == 'conv' else PatchMerging
        block = ConvMLPBlock if cfg['dwconv'] else MLPBlock
        norm = partial(type(self).build_norm, self.norm_cfg)
        self.tokenizer = ConvTokenizer(c, self.in_channels, norm)
        # The stem stage: F1 (C) -> F2 (D0). The conv ones are NCHW modules of their own; the
        # MLP one is the first of ``stages`` (NHWC), where earlier Pure-MLP releases had it.
        stages = []
        if cfg['stem_stage'] == 'conv':
            self.conv_stages = ConvStage(cfg['conv_blocks'], c, dims[0], norm, with_cp)
        elif cfg['stem_stage'] == 'conv_v1':
            self.conv_stages = ConvStageV1(c, dims[0], norm)
        else:
            self.conv_stages = None
            stages.append(MLPStage(MLPBlock, cfg['conv_blocks'], c, ratio, drop_path_rate,
                                   downsample(c, dims[0]), with_cp))
        stages += [MLPStage(block, depth, dims[i], ratio, drop_path_rate,
                            downsample(dims[i], dims[i + 1]) if i + 1 < len(dims) else None, with_cp)
                   for i, depth in enumerate(cfg['depths'])]
        self.stages = nn.ModuleList(stages)
        stem = self.conv_stages if self.conv_stages is not None else self.stages[0]
        #: The modules of each feature stage, in order (what ``frozen_stages`` freezes).
        self.feature_stages: List[List[nn.Module]] = [[self.tokenizer], [stem], [self.stages[-3]],
                                                      [self.stages[-2], self.stages[-1]]]
        #: Names of the modules whose outputs are F1-F4 (NCHW; parameter-holding modules of the
        #: published names, none added): for forward hooks and the extractors that take module names.
        self.feature_modules = ('tokenizer', 'conv_stages' if self.conv_stages is not None else 'stages.0',
                                f'stages.{len(self.stages) - 3}', f'stages.{len(self.stages) - 1}')
        self.channels = (c, dims[0], dims[1], dims[2])
        #: channels and strides of the returned maps, in ``out_indices`` order
        self.out_channels = tuple(self.channels[i] for i in self.out_indices)
        self.out_strides = tuple(self.strides[i] for i in self.out_indices)
        self._freeze_stages()
        if pretrained is not None:
            self.load_pretrained(pretrained)

    @torch.jit.unused  # variable-length tuples are not TorchScript; scripted models use forward_maps
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.forward_maps(x)
        return tuple(feats[i].contiguous(memory_format=self.out_memory_format) for i in self.out_indices)

    def forward_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """All of F1-F4 as NCHW views, some of them of channels-last memory (``forward`` makes the
        ones it returns contiguous). Scriptable: the timm models use it."""
        check_images(x, self.in_channels)
        # Inference in channels-last memory: the convolutions run without layout reorders (about
        # 1.2-1.4x faster forward on CPU than NCHW) and the conv stage's output is NHWC in memory.
        # Training keeps the input's NCHW: oneDNN's backward of dense 3x3 convolutions is 1.5-2.8x
        # slower in channels-last (measured, CPU), and the whole training step 1.4x slower.
        if not self.training:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.tokenizer(x)  # (N, C, H/4, W/4)
        feats = [x]
        if self.conv_stages is not None:
            x = self.conv_stages(x)  # (N, D0, H/8, W/8)
            feats.append(x)
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            x = stage(x)  # (N, C'', H'/2, W'/2), the last stage without downsampling; NCHW views of NHWC
            if i != last - 1:  # the last-but-one stage's output is the last one's input, at F4's stride
                feats.append(x)
        return feats

    # ----------------------------------------------------------------- training behaviour
    def _freeze_stages(self) -> None:
        for modules in self.feature_stages[:self.frozen_stages + 1]:
            for module in modules:
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> 'ConvMLP':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    # ------------------------------------------------------------ layer-wise lr decay
    def layer_units(self) -> List[str]:
        """Module names of the backbone's layers for layer-wise learning-rate decay, input first:
        the tokenizer, each conv block (a conv stage without blocks is one layer), each MLP
        block; a stage's downsampling belongs to its last block."""
        units = ['tokenizer']
        conv = getattr(self, 'conv_stages', None)
        if conv is not None:
            blocks = getattr(conv, 'conv_blocks', None)
            units += [f'conv_stages.conv_blocks.{i}' for i in range(len(blocks))] if blocks else ['conv_stages']
        for s, stage in enumerate(getattr(self, 'stages', [])):
            units += [f'stages.{s}.blocks.{b}' for b in range(len(stage.blocks))]
        return units

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """mmpretrain's layer-wise decay protocol: ``(depth of param_name, number of depths)``.
        Depth i is :meth:`layer_units` ``[i]``; names outside ``prefix`` (the head) get the last
        depth, so their lr is the base lr and the tokenizer's the most decayed.

        Args:
            param_name (str): A parameter name of the model that holds this backbone.
            prefix (str): The backbone's prefix in those names, e.g. ``'backbone.'``.
        """
        units = self.layer_units()
        if not param_name.startswith(prefix):
            return len(units), len(units) + 1
        name = param_name[len(prefix):]
        for depth in range(len(units) - 1, -1, -1):
            if name.startswith(units[depth] + '.'):
                return depth, len(units) + 1
        # not inside a block: a stage's downsampling, which goes with that stage's last block
        stage = '.'.join(name.split('.')[:2]) if name.startswith('stages.') else name.split('.')[0]
        depths = [d for d, unit in enumerate(units) if unit == stage or unit.startswith(stage + '.')]
        if depths:
            return max(depths), len(units) + 1
        raise ValueError(f'{param_name!r} is not a parameter of {type(self).__name__} (prefix {prefix!r})')

    # ------------------------------------------------------------------- init and weights
    def init_weights(self) -> None:
        """The published random initialisation."""
        self.apply(init_published)

    def load_pretrained(self, filename: str, sha256: Optional[str] = None,
                        reader: Callable[..., object] = read_checkpoint, prefix: Optional[str] = None,
                        map_location: Union[str, torch.device, Callable, None] = 'cpu') -> None:
        """Loads backbone weights from ``filename`` (a path or URL), strictly, after checking its
        SHA-256 when ``sha256`` is given.

        Accepted: a published classification checkpoint (a raw state dict, or wrapped in
        ``state_dict``/``model``, with or without ``module.``) whose ``norm.*``/``head.*`` keys
        are ignored, and mm checkpoints of ours (detector, segmentor or classifier), whose
        ``backbone.*`` keys are taken. With ``prefix`` (mmengine's ``Pretrained`` init), exactly
        the keys under it are taken, the prefix removed. Any other missing or unexpected key, or a
        shape that differs, raises :class:`~convmlp_mm.models.weights.CheckpointError` naming the
        file and the keys.

        Args:
            filename (str): A path or URL.
            sha256 (str, optional): The file's expected SHA-256.
            reader (callable): ``reader(filename, map_location=..., sha256=...)`` -> checkpoint.
                Defaults to torch's weights-only reader
                (:func:`~convmlp_mm.models.weights.read_checkpoint`).
            prefix (str, optional): Take the keys under this prefix (e.g. ``'backbone.'``).
            map_location: Where the tensors are read to, as for :func:`torch.load`. Defaults to
                the CPU.
        """
        checkpoint = reader(filename, map_location=map_location, sha256=sha256)
        if prefix is None:
            state = backbone_state_dict(checkpoint, filename)
        else:
            state = prefixed_state_dict(checkpoint, prefix, filename)
        load_state_dict_exactly(self, state, filename)

    # ------------------------------------------------------------------------ arch table
    # Sizes S/M/L (Table 1) with the switches of the published models; Pure-MLP and Table 2's
    # rows (all with the S sizes; rows 5 and 6 differ only in epochs) are entries of the same table.
    arch_zoo: Dict[str, dict] = {
        **dict.fromkeys(['s', 'small', 'table2-row7'],
                        dict(SIZES['s'], stem_stage='conv', downsample='conv', dwconv=True)),
        **dict.fromkeys(['m', 'medium'], dict(SIZES['m'], stem_stage='conv', downsample='conv', dwconv=True)),
        **dict.fromkeys(['l', 'large'], dict(SIZES['l'], stem_stage='conv', downsample='conv', dwconv=True)),
        **dict.fromkeys(['pure-mlp-s', 'table2-row1'],
                        dict(SIZES['s'], stem_stage='mlp', downsample='patch_merging', dwconv=False)),
        'pure-mlp-m': dict(SIZES['m'], stem_stage='mlp', downsample='patch_merging', dwconv=False),
        'pure-mlp-l': dict(SIZES['l'], stem_stage='mlp', downsample='patch_merging', dwconv=False),
        'table2-row2': dict(SIZES['s'], stem_stage='conv_v1', downsample='patch_merging', dwconv=False),
        'table2-row3': dict(SIZES['s'], stem_stage='conv_v1', downsample='conv', dwconv=False),
        'table2-row4': dict(SIZES['s'], stem_stage='conv_v1', downsample='patch_merging', dwconv=True),
        **dict.fromkeys(['table2-row5', 'table2-row6'],
                        dict(SIZES['s'], stem_stage='conv_v1', downsample='conv', dwconv=True)),
    }


class PureMLP(ConvMLP):
    """The paper's Pure-MLP baseline (Table 2, first row): ConvMLP with the three switches off,
    ``stem_stage='mlp'``, ``downsample='patch_merging'``, ``dwconv=False`` ("one patch converter
    and a sequence of channel MLPs"). Its own name in configs; the same implementation.

    No Pure-MLP code or weights were published; this follows the paper's description and
    reproduces its parameter counts (7.88 M with the 1000-class head) and GMACs (1.47 G).

    Args:
        arch (str | dict): ``'s'``/``'m'``/``'l'`` (or ``'small'``/``'medium'``/``'large'``), or a
            dict of ConvMLP's arch keys (the switches may be left out; others than Pure-MLP's
            are refused: use :class:`ConvMLP` for them).
        drop_path_rate (float): Stochastic depth, rising linearly from 0 to this in every stage.
        out_indices, frozen_stages, norm_eval, with_cp, in_channels: see :class:`ConvMLP`.
    """
    switch_defaults = dict(stem_stage='mlp', downsample='patch_merging', dwconv=False)
    switches = {key: (value, ) for key, value in switch_defaults.items()}
    arch_zoo: Dict[str, dict] = {
        **dict.fromkeys(['s', 'small'], ConvMLP.arch_zoo['pure-mlp-s']),
        **dict.fromkeys(['m', 'medium'], ConvMLP.arch_zoo['pure-mlp-m']),
        **dict.fromkeys(['l', 'large'], ConvMLP.arch_zoo['pure-mlp-l']),
    }


def init_published(module: nn.Module) -> None:
    """The published random initialisation, applied per module."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, _BatchNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# ----------------------------------------------------------------- checkpoint converter
# The backbone's module names are the published ones, so a published backbone state dict
# needs no renaming (``backbone_state_dict`` in weights.py unwraps it and drops the head). Our
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
