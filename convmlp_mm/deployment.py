"""ONNX export of our configs' models, and checks of the exported graphs with ONNX Runtime.

What exports (``part='model'``): the tensor outputs of a config's whole network, before any
post-processing, with dynamic batch, height and width:

- a single-stage detector (RetinaNet): per FPN level, class scores and box deltas
  (``cls_score_0..4``, ``bbox_pred_0..4``); anchors, decoding and NMS stay outside the graph;
- a segmentor (Semantic FPN): ``seg_logits`` at 1/4 of the input size;
- a classifier: ``logits``.

``part='backbone'`` exports the backbone alone (``F1``-``F4``). The input is the normalised
image batch, as the config's data preprocessor gives it (mean/std and BGR->RGB are not in the
graph). Two-stage detectors (Mask R-CNN, Faster R-CNN) are refused: their second stage crops
RoIs of data-dependent boxes after NMS (mmcv's RoIAlign and batched NMS), which the plain
exporter cannot express; OpenMMLab's mmdeploy has ONNX symbolics and runtime plugins for those
ops and exports such models whole.

One module is swapped for export: mmseg's ``Upsample`` with a ``scale_factor`` computes its output
size with ``int()``, which tracing records as a constant (the graph would then resize every input
to the traced size's maps); :class:`ScaleUpsample` does the same interpolation by scale factor,
which exports as a dynamic ``Resize``.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config

from .engine.checkpoint import load_checkpoint
from .compat import ONNX_DYNAMO_EXPORTER, onnx_export_kwargs
from .models.weights import load_state_dict_exactly, unwrap_state_dict
from .mm import build_host_model

#: The ONNX opset of the TorchScript-based exporter's graphs (LayerNormalization is an operator
#: since opset 17); the dynamo exporter writes its own default (18 or later).
OPSET = 17
PARTS = ('model', 'backbone')


class ExportError(ValueError):
    """A config or model that cannot be exported, with the reason and what can."""


def build_model(config: str, checkpoint: Optional[str] = None) -> Tuple[nn.Module, str]:
    """``(model in eval mode, scope)`` of an mm config. With ``checkpoint`` its weights are loaded
    strictly (weights-only); without, the model keeps its random initialisation: no
    ``init_cfg`` checkpoint is read (nothing is downloaded)."""
    cfg = Config.fromfile(config)
    if cfg.model.get('backbone', {}).get('init_cfg') is not None:
        cfg.model.backbone.init_cfg = None
    if cfg.model.get('pretrained') is not None:  # mmseg's form of a backbone checkpoint
        cfg.model.pretrained = None
    model, scope = build_host_model(cfg, config)
    model.init_weights()
    if checkpoint:
        state = unwrap_state_dict(load_checkpoint(checkpoint, map_location='cpu'), checkpoint)
        load_state_dict_exactly(model, state, checkpoint)
    return model.eval(), scope


class ScaleUpsample(nn.Module):
    """``F.interpolate`` by ``scale_factor``: mmseg's ``Upsample(scale_factor=s)`` (integer ``s``:
    the same output size, ``floor(s * size)``, and the same sampling positions) in a form that
    exports with dynamic sizes."""

    def __init__(self, scale_factor: float, mode: str, align_corners: Optional[bool]) -> None:
        super().__init__()
        self.scale_factor, self.mode, self.align_corners = scale_factor, mode, align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode, align_corners=self.align_corners)


def _swap_upsampling(model: nn.Module) -> None:
    """Replaces, in place, mmseg's integer-factor ``Upsample`` modules by :class:`ScaleUpsample`."""
    from mmseg.models.utils import Upsample
    for module in list(model.modules()):
        for name, child in module.named_children():
            if (isinstance(child, Upsample) and not child.size and isinstance(child.scale_factor, float)
                    and child.scale_factor.is_integer()):
                setattr(module, name, ScaleUpsample(child.scale_factor, child.mode, child.align_corners))


def _flatten(outputs) -> List[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for item in outputs for t in _flatten(item)]


class TensorGraph(nn.Module):
    """The tensors that are exported: the backbone's maps, or the whole model's ``mode='tensor'``
    outputs, as one flat tuple (names in :attr:`names`).

    Args:
        model (nn.Module): An mmdet, mmseg or mmpretrain model (an mmseg one has its upsampling
            modules swapped in place; see the module docstring).
        scope (str): Its library.
        part (str): ``'model'`` or ``'backbone'``.

    Raises:
        ExportError: a two-stage detector, or an unknown part.
    """

    def __init__(self, model: nn.Module, scope: str, part: str = 'model') -> None:
        super().__init__()
        if part not in PARTS:
            raise ExportError(f'part={part!r} is not one of {PARTS}')
        if part == 'model' and hasattr(model, 'roi_head'):
            raise ExportError(
                f'{type(model).__name__} is a two-stage detector: its RoI head crops features at boxes chosen by '
                'NMS (mmcv RoIAlign, batched NMS), which torch.onnx cannot export; use mmdeploy '
                '(https://github.com/open-mmlab/mmdeploy), which has ONNX ops for both, or export part=backbone')
        self.model, self.part = model, part
        if part == 'backbone':
            self.names = [f'F{i + 1}' for i in getattr(model.backbone, 'out_indices', range(4))]
        elif scope == 'mmdet':
            levels = len(model.bbox_head.prior_generator.strides)
            self.names = [f'cls_score_{i}' for i in range(levels)] + [f'bbox_pred_{i}' for i in range(levels)]
        elif scope == 'mmseg':
            self.names = ['seg_logits']
            _swap_upsampling(model)
        else:
            self.names = ['logits']
        self.eval()  # torch.onnx.export restores the mode it finds, for every submodule

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.part == 'backbone':
            return tuple(self.model.backbone(x))
        return tuple(_flatten(self.model(x, mode='tensor')))


def export_onnx(graph: TensorGraph, out: str, shape: Sequence[int]) -> None:
    """Writes ``graph`` to ``out`` as ONNX, traced at ``(2, 3, H, W)`` (``torch.export`` treats a
    size-1 dimension as a constant), with batch, height and width dynamic: with the dynamo exporter
    (:data:`~convmlp_mm.compat.ONNX_DYNAMO_EXPORTER`) as symbolic sizes ``batch``, ``height`` and
    ``width`` (at least 32, F4's stride) that the outputs' sizes are expressions of; with the
    TorchScript one as dynamic axes."""
    x = torch.rand(2, 3, *shape)
    with torch.no_grad():
        if ONNX_DYNAMO_EXPORTER:
            from torch.export import Dim
            sizes = {0: Dim('batch', min=1), 2: Dim('height', min=32), 3: Dim('width', min=32)}
            torch.onnx.export(graph, (x, ), out, input_names=['image'], output_names=graph.names,
                              dynamic_shapes={'x': sizes}, **onnx_export_kwargs())
            return
        dynamic = {'image': {0: 'batch', 2: 'height', 3: 'width'}}
        dynamic.update({name: {0: 'batch', 2: f'{name}_height', 3: f'{name}_width'} for name in graph.names
                        if name != 'logits'})
        torch.onnx.export(graph, (x, ), out, input_names=['image'], output_names=graph.names,
                          dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True,
                          **onnx_export_kwargs())


def ort_session(path: str, threads: Optional[int] = None):
    """An ONNX Runtime CPU session of ``path`` with ``threads`` intra-op threads (default: torch's)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def max_relative_errors(graph: TensorGraph, session, x: torch.Tensor) -> Dict[str, float]:
    """Per output: ``max |onnx - torch| / max |torch|`` at input ``x``."""
    with torch.no_grad():
        expected = graph(x)
    got = session.run(None, {'image': x.numpy()})
    return {name: float(np.abs(g - e.numpy()).max() / max(float(e.abs().max()), 1e-12))
            for name, g, e in zip(graph.names, got, expected)}
