"""ImageNet classifiers: the published head (LayerNorm per token, mean over tokens, linear)
on our backbones, for mmpretrain (:class:`MLPClsHead`) and for timm (``convmlp_s`` etc.).
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..registry import register_model
from .base import HEAD_PREFIXES, MultiStageBackbone, backbone_state_dict, init_published
from .convmlp import ConvMLP, PureMLP, mmpretrain_to_published
from .layers import LayerNorm


def pool_tokens(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """The published pooling: ``x`` (N, C, H, W) -> LayerNorm per token -> mean -> (N, C)."""
    return norm(x.permute(0, 2, 3, 1)).mean(dim=(1, 2))  # NCHW -> NHWC (N, H, W, C)


# ---------------------------------------------------------------------------- mmpretrain
try:
    from mmpretrain.models.heads import ClsHead
except ImportError:  # mmpretrain is an optional extra
    ClsHead = None

if ClsHead is not None:

    @register_model
    class MLPClsHead(ClsHead):
        """The published ConvMLP / Pure-MLP classification head for mmpretrain's
        ``ImageClassifier``: takes the last backbone output (N, C, H, W).

        Args:
            num_classes (int): Number of classes.
            in_channels (int): Channels of the last backbone output.
            loss (dict): Classification loss config. Defaults to cross-entropy.
            topk (int | tuple): Top-k accuracies to report. Defaults to (1, ).
            init_cfg (dict, optional): Defaults to the published init (truncated normal, std .02).
        """

        def __init__(self, num_classes: int, in_channels: int,
                     loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                     topk: Union[int, Tuple[int, ...]] = (1, ),
                     init_cfg: Optional[dict] = dict(type='TruncNormal', layer='Linear', std=.02)) -> None:
            super().__init__(loss=loss, topk=topk, init_cfg=init_cfg)
            self.norm = LayerNorm(in_channels)
            self.fc = nn.Linear(in_channels, num_classes)

        def pre_logits(self, feats: Tuple[torch.Tensor, ...]) -> torch.Tensor:
            return pool_tokens(self.norm, feats[-1])

        def forward(self, feats: Tuple[torch.Tensor, ...]) -> torch.Tensor:
            return self.fc(self.pre_logits(feats)).float()  # under autocast, softmax and loss in float32


# --------------------------------------------------------------------------------- timm
class MLPClassifier(nn.Module):
    """A backbone with the published head, as a timm model (``timm.create_model('convmlp_s')``).
    State dict keys: ``backbone.*``, ``norm.*``, ``head.*``.

    Args:
        backbone (str): ``'ConvMLP'`` or ``'PureMLP'``.
        arch (str | dict): The backbone's arch.
        num_classes (int): Classes of the head; 0 for no head (features only).
        in_chans (int): Must be 3.
        drop_path_rate (float): The backbone's stochastic depth.
        global_pool (str): Must be ``'avg'`` (the published pooling).
    """
    backbones = dict(ConvMLP=ConvMLP, PureMLP=PureMLP)

    def __init__(self, backbone: str, arch: Union[str, dict], num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float = 0.1, global_pool: str = 'avg') -> None:
        super().__init__()
        if in_chans != 3 or global_pool != 'avg':
            raise ValueError(f'in_chans={in_chans!r}, global_pool={global_pool!r}: only 3 and "avg" are supported')
        self.backbone: MultiStageBackbone = self.backbones[backbone](arch, drop_path_rate=drop_path_rate)
        self.num_classes = num_classes
        self.num_features = self.backbone.channels[-1]
        self.norm = LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.feature_info = [dict(num_chs=c, reduction=s, module=f'backbone.stage{i}')
                             for i, (c, s) in enumerate(zip(self.backbone.channels, self.backbone.strides))]
        self.apply(init_published)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str = 'avg') -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = pool_tokens(self.norm, x)
        return x if pre_logits else self.head(x).float()  # under autocast, softmax in float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Union[int, Sequence[int], None] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """timm's feature API: F1-F4 (all when ``indices`` is None; an int n means the last n)."""
        if output_fmt != 'NCHW':
            raise ValueError(f'output_fmt={output_fmt!r} is not supported: only "NCHW"')
        feats = self.backbone(x)
        if indices is None:
            indices = range(len(feats))
        elif isinstance(indices, int):
            indices = range(len(feats) - indices, len(feats))
        intermediates = [feats[i] for i in indices]
        return intermediates if intermediates_only else (feats[-1], intermediates)

    def prune_intermediate_layers(self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drops the head for feature extraction; returns the kept indices."""
        if prune_head:
            self.reset_classifier(0)
        n = len(self.backbone.channels)
        return list(range(n - indices, n)) if isinstance(indices, int) else list(indices)


def timm_checkpoint_filter(state_dict: Dict[str, torch.Tensor], model: MLPClassifier) -> Dict[str, torch.Tensor]:
    """Published (or our mmpretrain) checkpoint -> :class:`MLPClassifier` keys."""
    if any(k.startswith('head.fc.') for k in state_dict):  # our mmpretrain layout
        state_dict = mmpretrain_to_published(state_dict)
    out = {'backbone.' + k: v for k, v in backbone_state_dict(state_dict).items()}
    out.update({k: v for k, v in state_dict.items() if k.startswith(HEAD_PREFIXES)})
    return out
