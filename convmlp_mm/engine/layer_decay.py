"""Layer-wise learning-rate decay for detectors and segmentors with our backbones.

mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` asks the model for
``get_layer_depth``; its classifiers pass the question to the backbone (ours answer it,
:meth:`~convmlp_mm.models.convmlp.ConvMLP.get_layer_depth`), but mmdet's detectors
and mmseg's segmentors have no such method, and mmdet's own constructor accepts only ConvNeXt.
:class:`BackboneLayerDecayOptimWrapperConstructor` is mmpretrain's constructor asking
``model.backbone`` instead; :mod:`convmlp_mm.mm` registers it into mmdet, mmseg and
mmpretrain when mmpretrain is installed::

    optim_wrapper = dict(constructor='BackboneLayerDecayOptimWrapperConstructor',
                         paramwise_cfg=dict(layer_decay_rate=0.9))
"""
from typing import Callable, List, Optional

import torch.nn as nn
from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor


class BackboneLayerDecayOptimWrapperConstructor(LearningRateDecayOptimWrapperConstructor):
    """mmpretrain's layer-wise lr decay (``paramwise_cfg.layer_decay_rate``, its weight-decay
    rules) with depths from ``model.backbone.get_layer_depth(name, 'backbone.')``: every
    parameter outside the backbone (neck, heads) gets the base lr."""

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   get_layer_depth: Optional[Callable] = None, **kwargs) -> None:
        if get_layer_depth is None:
            backbone = getattr(module, 'backbone', None)
            if not hasattr(backbone, 'get_layer_depth'):
                raise TypeError(f'{type(module).__name__} has no backbone with get_layer_depth: '
                                'BackboneLayerDecayOptimWrapperConstructor needs a ConvMLP or PureMLP '
                                '(or another backbone that has it)')

            def get_layer_depth(name: str):
                return backbone.get_layer_depth(name, 'backbone.')
        super().add_params(params, module, prefix, get_layer_depth, **kwargs)
