"""Inference-time fusion: fewer passes over memory, the same outputs (up to float rounding).

:func:`fuse` folds every BatchNorm that follows a convolution inside an ``nn.Sequential``
(the tokenizer and the conv-stage blocks) into that convolution, and the affine part of every
LayerNorm that feeds a channel MLP into the MLP's first linear layer. The model must be in
eval mode and is changed in place; train the unfused model.

:func:`prepare_inference` is the whole-model step of ``tools/test.py --amp`` and ``tools/infer.py
--amp``: eval mode, every backbone of ours fused, the heads' output layers in float32 under
autocast, and the whole model (neck and heads included) in channels-last memory, oneDNN's
native layout on the CPU.
"""
import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .convmlp import ConvMLP
from .layers import MLPBlock


def _fold_layernorm(norm: nn.LayerNorm, fc: nn.Linear) -> None:
    """``fc(norm(x))`` with ``norm`` left without its affine part: W' = W diag(g), b' = W beta + b."""
    with torch.no_grad():
        fc.bias.add_(fc.weight @ norm.bias)
        fc.weight.mul_(norm.weight)
    norm.weight, norm.bias, norm.elementwise_affine = None, None, False


def fuse(model: nn.Module) -> nn.Module:
    """Folds BatchNorm into convolutions and LayerNorm affines into linear layers, in place.

    Args:
        model (nn.Module): A ConvMLP or Pure-MLP backbone (or a model containing one), in eval mode.

    Returns:
        nn.Module: ``model``.
    """
    if model.training:
        raise ValueError('fuse() needs a model in eval mode: BatchNorm is folded with its running statistics')
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i], module[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
        if isinstance(module, MLPBlock) and module.norm1.elementwise_affine:
            _fold_layernorm(module.norm1, module.channel_mlp1.fc1)
            _fold_layernorm(module.norm2, module.channel_mlp2.fc1)
    return model


#: Names of the heads' output layers (mmdet, mmseg, mmpretrain): class logits and box deltas.
OUTPUT_LAYERS = ('rpn_cls', 'rpn_reg', 'retina_cls', 'retina_reg', 'fc_cls', 'fc_reg', 'conv_logits', 'conv_seg',
                 'conv_cls', 'conv_reg')


class Float32Output(nn.Module):
    """An output layer that computes in float32 (its weights' dtype) under autocast: box deltas
    and logits keep float32's precision, which bfloat16 (8 significant bits) rounds to about
    0.4 %.

    Args:
        layer (nn.Module): The wrapped layer (a conv or linear layer).
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.layer(x.to(self.layer.weight.dtype))


def prepare_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """Prepares a whole model (detector, segmentor, classifier or a bare backbone) for inference,
    in place: eval mode, every ConvMLP/Pure-MLP backbone in it fused (:func:`fuse`), the heads'
    output layers (:data:`OUTPUT_LAYERS`) computing in float32 under autocast; with
    ``channels_last``, every 4-D weight in channels-last memory and our backbones returning
    channels-last feature maps, so that the neck's and heads' convolutions (ResNet backbones'
    too) run without layout reorders. The outputs are the same up to float rounding.

    Args:
        model (nn.Module): The model; train it before, not after.
        channels_last (bool): Convert to channels-last memory. Defaults to True.

    Returns:
        nn.Module: ``model``.
    """
    model.eval()
    for module in list(model.modules()):
        for name, child in module.named_children():
            if name in OUTPUT_LAYERS and isinstance(child, (nn.Conv2d, nn.Linear)):
                setattr(module, name, Float32Output(child))
        if isinstance(module, ConvMLP):
            fuse(module)
            if channels_last:
                module.out_memory_format = torch.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model
