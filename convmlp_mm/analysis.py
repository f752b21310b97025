"""Parameters and multiply-accumulates (MACs) of models, counted with mmengine's FlopAnalyzer.

Three MAC counts are reported:

- ``conv+linear``: convolutions, linear layers and matrix products (e.g. ConvMLP-S 2.385 G at
  224x224);
- ``ptflops-2021``: the convention of the paper's GMACs (Tables 1-2), the ptflops counting of
  2021: conv and linear multiply-adds, a conv's bias once per output element and a linear's once
  per output feature, BatchNorm 2 and ReLU 1 per element, max pool 1 per input element;
  LayerNorm, GELU and residual adds not counted (ConvMLP-S 2.397 G, Pure-MLP-S 1.468 G);
- ``all``: every operator mmengine counts, norms and interpolation included.
"""
from collections import Counter
from typing import Any, Dict, List, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import conv_flop_jit, get_shape, linear_flop_jit

#: FlopAnalyzer's names of the operators counted as conv+linear.
CONV_LINEAR = ('conv', 'linear', 'matmul', 'addmm', 'bmm', 'einsum')


def _numel(value: Any) -> int:
    shape = get_shape(value)
    return int(torch.Size(shape).numel()) if shape is not None else 0


def _conv_with_bias(inputs: List[Any], outputs: List[Any]) -> Counter:
    bias = _numel(outputs[0]) if get_shape(inputs[2]) is not None else 0
    return conv_flop_jit(inputs, outputs) + Counter({'conv': bias})


def _linear_with_bias(inputs: List[Any], outputs: List[Any]) -> int:
    bias = get_shape(inputs[2])
    return linear_flop_jit(inputs, outputs) + (bias[0] if bias is not None else 0)


def _per_output_element(inputs: List[Any], outputs: List[Any]) -> int:
    return _numel(outputs[0])


def _per_input_element(inputs: List[Any], outputs: List[Any]) -> int:
    return _numel(inputs[0])


def _not_counted(inputs: List[Any], outputs: List[Any]) -> int:
    return 0  # a handle of None would be ignored only for ops FlopAnalyzer has no handle of


#: FlopAnalyzer's operator handles of the ptflops-2021 convention (batch_norm keeps mmengine's
#: eval-mode handle: 2 per element with an affine part).
PTFLOPS_2021_HANDLES = {
    'aten::_convolution': _conv_with_bias,
    'aten::linear': _linear_with_bias,
    'aten::relu': _per_output_element,
    'aten::relu_': _per_output_element,
    'aten::max_pool2d': _per_input_element,
    'aten::layer_norm': _not_counted,
    'aten::group_norm': _not_counted,
    'aten::upsample_nearest2d': _not_counted,
    'aten::upsample_bilinear2d': _not_counted,
}


def _analyzer(model: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> FlopAnalyzer:
    model.eval()  # not chained: some backbones' train() returns None
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


def count_macs(model: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> Dict[str, float]:
    """``{'conv+linear': MACs, 'ptflops-2021': MACs, 'all': MACs}`` of ``model(*inputs)``
    (one forward each, eval mode); see the module docstring."""
    analyzer = _analyzer(model, inputs)
    by_op = analyzer.by_operator()
    paper = _analyzer(model, inputs).set_op_handle(**PTFLOPS_2021_HANDLES)
    return {'conv+linear': float(sum(v for k, v in by_op.items() if k in CONV_LINEAR)),
            'ptflops-2021': float(paper.total()), 'all': float(analyzer.total())}


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
