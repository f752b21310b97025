"""Inference-time fusion: fewer passes over memory, the same outputs (up to float rounding).

:func:`fuse` folds every BatchNorm that follows a convolution inside an ``nn.Sequential``
(the tokenizer and the conv-stage blocks) into that convolution, and the affine part of every
LayerNorm that feeds a channel MLP into the MLP's first linear layer. The model must be in
eval mode and is changed in place; train the unfused model.

:func:`prepare_inference` is the whole-model step of ``tools/test.py --amp`` and ``tools/infer.py
--amp``: eval mode, every backbone of ours fused, the heads' output layers in float32 under
autocast, mmcv's RoIAlign fed what its kernel reads, and the whole model (neck and heads included)
in channels-last memory, oneDNN's native layout on the CPU. Each special case is a module of the
prepared model (its class, with a mixin of this module first), so the model gives its outputs
wherever it is called.
"""
import functools
from typing import Dict, List

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ..compat import NCHW_FLOAT32_OPS, is_autocast_enabled, loaded_classes
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


class Float32Output:
    """Mixed into a head's output layer (a convolution or linear layer) by :func:`prepare_inference`:
    the layer computes in float32 (its weights' dtype) under autocast, so that box deltas and
    logits keep float32's precision, which bfloat16 (8 significant bits) rounds to about 0.4 %.
    The layer keeps its class's behaviour otherwise, and its parameters' names."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.to(self.weight.dtype))


class NCHWFloat32Input:
    """Mixed into mmcv's ``RoIAlign`` by :func:`prepare_inference`: its CPU kernel reads the
    input's memory as contiguous NCHW float32 without checking, so a channels-last map is made
    contiguous and, on the CPU, a half-precision one float32 (the result cast back)."""

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        if input.device.type == 'cpu' and input.dtype in (torch.bfloat16, torch.float16):
            return super().forward(input.float().contiguous(), rois.float()).to(input.dtype)
        return super().forward(input.contiguous(), rois)


class _LayerSources(TorchFunctionMode):
    """While active: which of ``layers`` (convolutions and linear layers) each tensor made last
    came through. A layer's output is marked by a forward hook; any other operation's outputs get
    the marks of its inputs."""

    def __init__(self, layers: List[nn.Module]) -> None:
        super().__init__()
        self.marks: Dict[int, tuple] = {}  # id(tensor) -> (tensor, the layers); the tensor keeps its id
        self.handles = [layer.register_forward_hook(self._mark_output) for layer in layers]

    def _mark_output(self, layer: nn.Module, inputs, output: torch.Tensor) -> None:
        self.marks[id(output)] = (output, frozenset([layer]))

    def of(self, tree) -> frozenset:
        """The layers the tensors in ``tree`` (nested lists, tuples, dicts) came through last."""
        tensors = (t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor))
        return frozenset().union(*(self.marks[id(t)][1] for t in tensors if id(t) in self.marks))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        layers = self.of((args, kwargs))
        if layers:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.marks[id(t)] = (t, layers)
        return out

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return super().__exit__(*exc)


class FindsOutputLayers:
    """Mixed into every head of a model by :func:`prepare_inference` until the head's first
    forward. That forward follows each output back to the last convolution or linear layer it came
    through: the head's output layers, found by what they compute, whatever their names. They
    become :class:`Float32Output` layers, the head its own class again, and under autocast the
    forward runs once more so that its outputs come from the float32 layers."""

    def forward(self, *args, **kwargs):
        host_class = next(c for c in type(self).__mro__ if c not in (type(self), FindsOutputLayers))
        layers = [m for m in self.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
        with _LayerSources(layers) as sources:
            outputs = super().forward(*args, **kwargs)
        self.__class__ = host_class
        for layer in sources.of(outputs):
            if not isinstance(layer, Float32Output):
                layer.__class__ = _mixed(Float32Output, type(layer))
        tensors = [t for t in tree_flatten(outputs)[0] if isinstance(t, torch.Tensor)]
        if any(is_autocast_enabled(t.device.type) for t in tensors):
            return self.forward(*args, **kwargs)
        return outputs


def _is_head(module: nn.Module) -> bool:
    return type(module).__name__.endswith('Head')


@functools.lru_cache(maxsize=None)
def _mixed(mixin: type, cls: type) -> type:
    """The subclass of ``cls`` with ``mixin`` first: a module whose class becomes it keeps its
    attributes, parameters and their names (as ``torch.nn.utils.parametrize`` does)."""
    return type(f'{mixin.__name__}{cls.__name__}', (mixin, cls), {'__module__': cls.__module__})


def prepare_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """Prepares a whole model (detector, segmentor, classifier or a bare backbone) for inference,
    in place: eval mode, every ConvMLP/Pure-MLP backbone in it fused (:func:`fuse`); the heads'
    output layers computing in float32 under autocast (:class:`FindsOutputLayers` finds them in
    each head's first forward; a head is a module whose class is named ``...Head``, OpenMMLab's
    convention for every head of mmdet, mmseg and mmpretrain, that holds no other head); mmcv's
    ``RoIAlign`` given NCHW float32 input (:class:`NCHWFloat32Input`); with ``channels_last``,
    every 4-D weight in channels-last memory and our backbones returning channels-last maps, so
    that the neck's and heads' convolutions (ResNet backbones' too) run without layout reorders.
    The outputs are the same up to float rounding, with or without autocast around the call.
    Modules keep their names and parameters theirs (the state dict's keys are the model's, less
    the norms :func:`fuse` folds).

    Args:
        model (nn.Module): The model; train it before, not after.
        channels_last (bool): Convert to channels-last memory. Defaults to True.

    Returns:
        nn.Module: ``model``.
    """
    model.eval()
    heads = [m for m in model.modules() if _is_head(m) and not any(_is_head(c) for c in list(m.modules())[1:])]
    nchw_ops = loaded_classes(NCHW_FLOAT32_OPS)
    for module in list(model.modules()):
        if isinstance(module, ConvMLP):
            fuse(module)
            if channels_last:
                module.out_memory_format = torch.channels_last
        if any(module is head for head in heads) and not isinstance(module, FindsOutputLayers):
            module.__class__ = _mixed(FindsOutputLayers, type(module))
        if isinstance(module, nchw_ops) and not isinstance(module, NCHWFloat32Input):
            module.__class__ = _mixed(NCHWFloat32Input, type(module))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model
