"""The ImageNet classifier: the published head (LayerNorm per token, mean over tokens, linear)
on our backbones, as a timm model (``convmlp_s`` etc.; torch only). The same head for
mmpretrain's ``ImageClassifier`` is :class:`convmlp_mm.mm.MLPClsHead`.
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..compat import is_autocast_enabled
from .convmlp import ConvMLP, PureMLP, init_published, mmpretrain_to_published
from .layers import LayerNorm, check_images
from .weights import HEAD_PREFIXES, backbone_state_dict


def pool_tokens(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """The published pooling: ``x`` (N, C, H, W) -> LayerNorm per token -> mean -> (N, C)."""
    return norm(x.permute(0, 2, 3, 1)).mean(dim=(1, 2))  # NCHW -> NHWC (N, H, W, C)


# --------------------------------------------------------------------------------- timm
#: timm's ``global_pool`` choices we offer; ``'avg'`` is the published pooling.
GLOBAL_POOLS = ('avg', 'max', 'avgmax', '')


class MLPClassifier(nn.Module):
    """A backbone with the published head, as a timm model (``timm.create_model('convmlp_s')``).
    State dict keys: ``backbone.*``, ``norm.*``, ``head.*``. Follows timm's model API:
    ``forward_features`` (F4, unpooled NCHW), ``forward_head``, ``reset_classifier``,
    ``forward_intermediates``, ``prune_intermediate_layers``, ``group_matcher``,
    ``set_grad_checkpointing``, ``feature_info`` (the modules that output F1-F4); scriptable by
    TorchScript and traceable by torch.fx.

    Args:
        backbone (str): ``'ConvMLP'`` or ``'PureMLP'``.
        arch (str | dict): The backbone's arch.
        num_classes (int): Classes of the head; 0 for no head (pooled features).
        in_chans (int): Input channels; pretrained weights adapt their first conv (timm's way).
        drop_path_rate (float): The backbone's stochastic depth.
        global_pool (str): ``'avg'`` (the published pooling: LayerNorm per token, then the
            mean), ``'max'``, ``'avgmax'`` (their average) or ``''`` (no pooling: the normed
            map, NCHW).
        device, dtype: Where and in which dtype the parameters are created (timm's factory
            arguments).
    """
    backbones = dict(ConvMLP=ConvMLP, PureMLP=PureMLP)

    def __init__(self, backbone: str, arch: Union[str, dict], num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float = 0.1, global_pool: str = 'avg', device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        check_global_pool(global_pool)
        self.backbone: ConvMLP = self.backbones[backbone](arch, drop_path_rate=drop_path_rate,
                                                                     in_channels=in_chans)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.backbone.channels[-1]
        self.norm = LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        #: F1-F4 for timm's feature extractors: each ``module`` outputs its map (NCHW)
        self.feature_info = [dict(num_chs=c, reduction=s, module='backbone.' + name) for c, s, name
                             in zip(self.backbone.channels, self.backbone.strides, self.backbone.feature_modules)]
        self.apply(init_published)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    # ------------------------------------------------------------------------ timm API
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new head for ``num_classes`` (0: none), on the model's device and dtype; the
        pooling stays unless ``global_pool`` is given."""
        if global_pool is not None:
            check_global_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        weight = next(self.backbone.parameters())
        self.head = (nn.Linear(self.num_features, num_classes, device=weight.device, dtype=weight.dtype)
                     if num_classes else nn.Identity())
        self.head.train(self.training)

    def group_matcher(self, coarse: bool = False) -> Dict[str, object]:
        """Parameter groups for timm's layer-wise optimizers: the tokenizer, then the stages
        (coarse) or their blocks (fine), then the head."""
        if coarse:
            blocks = [(r'^backbone\.conv_stages', (0, )), (r'^backbone\.stages\.(\d+)', (1, ))]
        else:
            blocks = [(r'^backbone\.conv_stages', (0, )), (r'^backbone\.stages\.(\d+)\.blocks\.(\d+)', None),
                      (r'^backbone\.stages\.(\d+)\.downsample_mlp', (99999, ))]
        return dict(stem=r'^backbone\.tokenizer', blocks=blocks + [(r'^norm', (99999, ))])

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Gradient checkpointing per block (the backbone's ``with_cp``)."""
        for module in self.backbone.modules():
            if hasattr(module, 'with_cp'):
                module.with_cp = enable

    # ------------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_maps(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.permute(0, 2, 3, 1))  # NCHW -> NHWC (N, H, W, C): the published LayerNorm per token
        if self.global_pool == 'avg':
            x = x.mean(dim=(1, 2))
        elif self.global_pool == 'max':
            x = x.amax(dim=(1, 2))
        elif self.global_pool == 'avgmax':
            x = 0.5 * (x.mean(dim=(1, 2)) + x.amax(dim=(1, 2)))
        if pre_logits:
            return x if self.global_pool else x.permute(0, 3, 1, 2)  # NHWC -> NCHW when unpooled
        x = self.head(x)
        if not self.global_pool:
            x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW (N, classes or C, H, W)
        return float32_under_autocast(x)  # softmax and losses in float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Union[int, List[int], None] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """timm's feature API: F1-F4 (all when ``indices`` is None; an int n means the last n),
        NCHW, and the final features (``forward_features``). ``norm`` applies the head's
        LayerNorm to F4 among the intermediates; ``stop_early`` changes nothing (all four maps
        come from one pass)."""
        if output_fmt != 'NCHW':
            raise ValueError(f'output_fmt={output_fmt!r} is not supported: only "NCHW"')
        feats = self.backbone.forward_maps(x)
        take = feature_indices(indices, len(feats))
        intermediates = [feats[i].contiguous() for i in take]
        if norm and take and take[-1] == len(feats) - 1:
            last = self.norm(intermediates[-1].permute(0, 2, 3, 1))  # NCHW -> NHWC (N, H, W, C)
            intermediates[-1] = last.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW (N, C, H, W)
        return intermediates if intermediates_only else (feats[-1], intermediates)

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drops the head (and with ``prune_norm`` the final norm) for feature extraction;
        returns the kept indices. The stages stay: all four maps come from one pass."""
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return feature_indices(indices, len(self.backbone.channels))


class ImageInput(nn.Module):
    """What :meth:`ConvMLP.forward_maps` does before its tokenizer, as a module without
    parameters: checks the images (:func:`~convmlp_mm.models.layers.check_images`) and, in eval
    mode, makes them channels-last.

    Args:
        in_channels (int): The backbone's input channels.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.in_channels)
        if not self.training:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def backbone_chain(backbone: ConvMLP) -> nn.Sequential:
    """The backbone's modules as one chain, each taking the previous one's output, in the order
    :meth:`ConvMLP.forward_maps` runs them: ``images`` (:class:`ImageInput`), ``tokenizer``,
    ``conv_stages`` (the conv stem stages), ``stages_0``, ``stages_1``... The same modules (its
    state-dict keys are the chain's names), for the extractors that run a model's children in turn
    and take some of their outputs: timm's ``feature_cls='dict'``/``'list'``, torchvision's
    ``IntermediateLayerGetter``. Its ``feature_info`` names the children that output F1-F4."""
    modules = [('images', ImageInput(backbone.in_channels)), ('tokenizer', backbone.tokenizer)]
    if backbone.conv_stages is not None:
        modules.append(('conv_stages', backbone.conv_stages))
    modules += [(f'stages_{i}', stage) for i, stage in enumerate(backbone.stages)]
    chain = nn.Sequential(OrderedDict(modules))
    chain.feature_info = [dict(num_chs=c, reduction=s, module=name.replace('.', '_')) for c, s, name
                          in zip(backbone.channels, backbone.strides, backbone.feature_modules)]
    return chain.train(backbone.training)


def check_global_pool(global_pool: str) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f'global_pool={global_pool!r} is not supported: choose one of {list(GLOBAL_POOLS)} '
                         "('avg' is the published pooling)")


def feature_indices(indices: Union[int, List[int], None], num: int) -> List[int]:
    """timm's ``indices``: None for all, an int n for the last n, or explicit (negative from the end)."""
    if indices is None:
        return list(range(num))
    if isinstance(indices, int):
        if not 0 < indices <= num:
            raise ValueError(f'indices={indices} is invalid: expected 1 to {num} (the last n feature maps)')
        return list(range(num - indices, num))
    bad = [i for i in indices if not -num <= i < num]
    if bad:
        raise ValueError(f'indices={list(indices)} has {bad} out of range: allowed are [{-num}, {num - 1}]')
    return [i % num for i in indices]


def float32_under_autocast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when autocast is on for its device (logits for softmax and losses), else
    unchanged, so that a model converted to bf16 or fp16 stays in that dtype."""
    if not torch.jit.is_scripting():
        if is_autocast_enabled(x.device.type):
            return x.float()
    return x


torch.fx.wrap('float32_under_autocast')


def timm_checkpoint_filter(state_dict: Dict[str, torch.Tensor], model: MLPClassifier) -> Dict[str, torch.Tensor]:
    """Published (or our mmpretrain) checkpoint -> :class:`MLPClassifier` keys."""
    if any(k.startswith('head.fc.') for k in state_dict):  # our mmpretrain layout
        state_dict = mmpretrain_to_published(state_dict)
    out = {'backbone.' + k: v for k, v in backbone_state_dict(state_dict).items()}
    out.update({k: v for k, v in state_dict.items() if k.startswith(HEAD_PREFIXES)})
    return out
