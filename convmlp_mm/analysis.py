"""Parameters and multiply-accumulates (MACs) of models, counted with mmengine's FlopAnalyzer.

Two MAC counts are reported: ``conv+linear`` (convolutions, linear layers and matrix
products: the convention of the paper's tables, e.g. ConvMLP-S 2.385 G at 224x224) and
``all`` (every operator mmengine counts, norms and interpolation included).
"""
from typing import Dict, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer

#: FlopAnalyzer's names of the operators counted as conv+linear.
CONV_LINEAR = ('conv', 'linear', 'matmul', 'addmm', 'bmm', 'einsum')


def count_macs(model: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> Dict[str, float]:
    """``{'conv+linear': MACs, 'all': MACs}`` of ``model(*inputs)`` (one forward, eval mode)."""
    model.eval()  # not chained: some backbones' train() returns None
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    by_op = analyzer.by_operator()
    return {'conv+linear': float(sum(v for k, v in by_op.items() if k in CONV_LINEAR)), 'all': float(analyzer.total())}


def count_params(model: nn.Module) -> Dict[str, int]:
    """All and trainable (``requires_grad``: the paper's tables) parameters."""
    return {'all': sum(p.numel() for p in model.parameters()),
            'trainable': sum(p.numel() for p in model.parameters() if p.requires_grad)}


class TensorForward(nn.Module):
    """A detector or segmentor whose ``forward`` takes one image tensor: the model's own
    ``mode='tensor'`` path (for tracing) or ``mode='predict'`` (post-processing included), with
    data samples made for the given size."""

    def __init__(self, model: nn.Module, scope: str, height: int, width: int, mode: str = 'tensor') -> None:
        super().__init__()
        self.model = model
        self.mode = mode
        self.data_samples = None
        if scope == 'mmseg' and mode == 'predict':
            from mmseg.structures import SegDataSample
            self.data_samples = [SegDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                                             pad_shape=(height, width)))]
        if scope == 'mmdet':
            from mmdet.structures import DetDataSample
            sample = DetDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                                 pad_shape=(height, width), scale_factor=(1., 1.),
                                                 batch_input_shape=(height, width)))
            self.data_samples = [sample]

    def forward(self, x: torch.Tensor):
        return self.model(x, self.data_samples, mode=self.mode)
