"""Post-training int8 models of our exported graphs (ONNX Runtime static quantization, QDQ
format), and any exported graph evaluated through a config's own test loop.

The steps, one function each:

1. :func:`calibration_inputs`: N images drawn from the config's own data loader (val or train), through
   the model's data preprocessor, as the exported graph takes them (normalised, padded).
2. :func:`quantize_int8`: int8 weights (per output channel, symmetric) and uint8 activations
   (per tensor, MinMax ranges over the calibration images) for the convolutions and matrix
   products (``Conv``, ``Gemm``, ``MatMul``); everything else stays float32 (LayerNorm, GELU,
   the residual additions, resizing), and so do the nodes named in ``keep_float``.
3. :func:`node_sensitivity`: for every quantizable node, the output correlation with float32
   when that node alone is int8, measured on calibration images.
4. :func:`choose_float_nodes`: where the all-int8 model's outputs do not agree with float32's
   as asked, leaves the most sensitive nodes in float32, one at a time, until they do.

:class:`OnnxRuntimeModel` runs an ``.onnx`` file in place of a config's network in mmengine's
test loop: the config's data preprocessor before it, the head's own post-processing after it
(RetinaNet's box decoding and NMS, Semantic FPN's resizing, the classifier's scores), so that the
config's evaluator (COCO mAP, mIoU, top-1) scores it beside the PyTorch model
(``tools/test.py CONFIG MODEL.onnx``).

ONNX Runtime's quantization tools are imported when used; importing this module imports neither
onnx nor onnxruntime.
"""
import os.path as osp
import tempfile
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import BaseModel

from .deployment import ort_session as session
from .mm import build_host_model, register_model

#: The node types that are quantized; the rest of the graph stays float32.
QUANTIZED_OPS = ('Conv', 'Gemm', 'MatMul')


def calibration_inputs(cfg: Config, model: nn.Module, num_images: int, split: str = 'val') -> List[np.ndarray]:
    """``num_images`` images drawn from the config's ``{split}_dataloader`` in a fixed random order
    (batch 1, seed 0: annotation files are often sorted by class or scene, so the first images
    alone can miss whole classes), through ``model``'s data preprocessor (test-time: normalised
    and padded as in evaluation), as float32 arrays of shape (1, 3, H, W).

    Raises:
        ValueError: ``split`` is not ``'val'``, ``'test'`` or ``'train'``, or the loader has
            fewer than ``num_images`` images.
    """
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    if split not in ('val', 'test', 'train'):
        raise ValueError(f"split={split!r} is invalid: expected 'val', 'test' or 'train'")
    loader_cfg = cfg[f'{split}_dataloader'].copy()
    loader_cfg.update(batch_size=1, num_workers=0, persistent_workers=False,
                      sampler=dict(type='DefaultSampler', shuffle=True, seed=0))
    if split == 'train':  # the evaluation pipeline: calibration sees what the model will see
        loader_cfg['dataset'] = dict(loader_cfg['dataset'], pipeline=cfg.test_dataloader.dataset.pipeline)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):  # the host's datasets and transforms
        loader = Runner.build_dataloader(loader_cfg)
    inputs = []
    with torch.no_grad():
        for batch in loader:
            inputs.append(model.data_preprocessor(batch, False)['inputs'].float().numpy())
            if len(inputs) == num_images:
                return inputs
    raise ValueError(f'{split}_dataloader has {len(inputs)} images; {num_images} were asked for calibration')


class _Inputs:
    """ONNX Runtime's ``CalibrationDataReader`` protocol (``get_next``) over a list of arrays."""

    def __init__(self, inputs: Sequence[np.ndarray]) -> None:
        self._next = iter([{'image': x} for x in inputs])

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self._next, None)


def prepare_for_quantization(fp32_path: str, out_path: str) -> None:
    """ONNX Runtime's pre-processing of a float graph (shape inference, graph optimisation), which
    quantization expects."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    quant_pre_process(fp32_path, out_path, skip_symbolic_shape=True)


def quantize_int8(prepared_path: str, out_path: str, inputs: Sequence[np.ndarray],
                  keep_float: Iterable[str] = (), only: Optional[Sequence[str]] = None) -> None:
    """Writes the int8 (QDQ) model of a prepared float graph (:func:`prepare_for_quantization`).

    Args:
        prepared_path (str): The prepared float32 ONNX file.
        out_path (str): The int8 ONNX file to write.
        inputs (list[np.ndarray]): Calibration images (:func:`calibration_inputs`).
        keep_float (Iterable[str]): Names of quantizable nodes to leave in float32.
        only (Sequence[str], optional): Quantize these nodes alone.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    quantize_static(prepared_path, out_path, _Inputs(inputs), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(keep_float),
                    nodes_to_quantize=list(only) if only else None)


def quantizable_nodes(path: str) -> List[dict]:
    """``dict(name, op, activation, weight)`` for every node of :data:`QUANTIZED_OPS` of a float
    graph whose second input is a weight (an initializer)."""
    import onnx
    graph = onnx.load(path).graph
    weights = {init.name for init in graph.initializer}
    return [dict(name=node.name, op=node.op_type, activation=node.input[0], weight=node.input[1])
            for node in graph.node if node.op_type in QUANTIZED_OPS and node.input[1] in weights]


def node_sensitivity(prepared_path: str, inputs: Sequence[np.ndarray], log=print) -> List[dict]:
    """How much each quantizable node alone costs: the output correlation with float32 on
    ``inputs`` when only that node is int8 (the rest float32); most sensitive first. Measured end
    to end: a node's own quantization noise does not tell what the layers after it make of it."""
    reference = session(prepared_path)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        alone = osp.join(folder, 'alone.onnx')
        for node in quantizable_nodes(prepared_path):
            quantize_int8(prepared_path, alone, inputs, only=[node['name']])
            rows.append(dict(node, correlation=output_agreement(reference, session(alone), inputs)))
    rows.sort(key=lambda row: row['correlation'])
    log('most sensitive: ' + ', '.join(f"{row['name']} {row['correlation']:.4f}" for row in rows[:3]))
    return rows


def output_agreement(reference, candidate, inputs: Sequence[np.ndarray]) -> float:
    """The lowest Pearson correlation, over outputs, between two sessions' outputs on ``inputs``
    (each output's values over all inputs together: a classifier's few logits per image give no
    stable correlation alone)."""
    pairs = [(reference.run(None, {'image': x}), candidate.run(None, {'image': x})) for x in inputs]
    worst = 1.
    for i in range(len(pairs[0][0])):
        a = np.concatenate([ref[i].ravel() for ref, _ in pairs]).astype(np.float64)
        b = np.concatenate([got[i].ravel() for _, got in pairs]).astype(np.float64)
        worst = min(worst, float(np.corrcoef(a, b)[0, 1]))
    return worst


def choose_float_nodes(prepared_path: str, out_path: str, inputs: Sequence[np.ndarray], target: float = 0.995,
                       max_float: int = 16, sensitivity_images: int = 8, log=print) -> dict:
    """Writes the int8 model of ``prepared_path`` to ``out_path`` with the fewest nodes left in
    float32 (most sensitive first by :func:`node_sensitivity`, at most ``max_float``) for which
    the int8 outputs correlate with the float32 ones at least ``target`` on ``inputs``.

    Args:
        sensitivity_images (int): How many of ``inputs`` the per-node measurement runs on (it
            quantizes once per node); measured only when the all-int8 model misses ``target`` and
            ``max_float`` allows float32 nodes.

    Returns:
        dict: ``float_nodes`` (the names left in float32), ``agreement`` (its output
        correlation), ``all_int8_agreement``, ``quantizable`` (the number of nodes) and
        ``sensitivity`` (the rows of :func:`node_sensitivity`; empty when not measured).
    """
    quantize_int8(prepared_path, out_path, inputs)
    reference = session(prepared_path)
    agreement = first = output_agreement(reference, session(out_path), inputs)
    nodes = quantizable_nodes(prepared_path)
    log(f'all {len(nodes)} quantizable nodes in int8: output correlation {agreement:.5f}')
    measure = agreement < target and max_float > 0
    rows = node_sensitivity(prepared_path, inputs[:sensitivity_images], log) if measure else []
    kept: List[str] = []
    for row in rows[:max_float]:
        if agreement >= target:
            break
        kept.append(row['name'])
        quantize_int8(prepared_path, out_path, inputs, keep_float=kept)
        agreement = output_agreement(reference, session(out_path), inputs)
        log(f"{row['name']} ({row['op']}, alone {row['correlation']:.4f}) in float32: output correlation "
            f'{agreement:.5f}')
    return dict(sensitivity=rows, float_nodes=kept, agreement=agreement, all_int8_agreement=first,
                quantizable=len(nodes))


class OnnxRuntimeModel(BaseModel):
    """An exported graph (:class:`~convmlp_mm.deployment.TensorGraph`, float32 or int8) in place of
    a config's network, for mmengine's test loop: ``cfg.model = dict(type='OnnxRuntimeModel',
    model=<the config's model>, onnx=FILE)``. The config's model is built for its data
    preprocessor and its head's post-processing, which hold no learned weights; the graph holds
    all of them.

    Args:
        model (dict): The config's model (an mmdet single-stage detector, an mmseg
            encoder-decoder or an mmpretrain image classifier).
        onnx (str): The ``.onnx`` file of that model's tensor outputs.
        scope (str): The host library of ``model``.
        threads (int, optional): ONNX Runtime's intra-op threads (default: torch's).
        data_preprocessor (dict, optional): The config's top-level ``data_preprocessor``, which
            mmengine's Runner hands to the model it builds: ``model``'s own where it has none.
    """

    def __init__(self, model: dict, onnx: str, scope: str, threads: Optional[int] = None,
                 data_preprocessor: Optional[dict] = None) -> None:
        if not osp.isfile(onnx):
            raise FileNotFoundError(f'OnnxRuntimeModel: {onnx!r} is not a file; expected an .onnx file written by '
                                    'tools/deployment/export_onnx.py or quantize_int8.py')
        host, _ = build_host_model(Config(dict(model=model, default_scope=scope, data_preprocessor=data_preprocessor)),
                                   onnx)
        if scope == 'mmseg' and (host.test_cfg or {}).get('mode', 'whole') != 'whole':
            raise ValueError(f"OnnxRuntimeModel: test_cfg.mode={host.test_cfg['mode']!r}; the graph runs whole "
                             "images: expected model.test_cfg.mode='whole'")
        super().__init__(data_preprocessor=host.data_preprocessor)
        self.host, self.scope, self.onnx = host, scope, onnx
        self._session = session(onnx, threads)

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'predict'):
        if mode != 'predict':
            raise ValueError(f'OnnxRuntimeModel runs predictions only; mode={mode!r} was asked')
        outputs = [torch.from_numpy(t) for t in self._session.run(None, {'image': inputs.float().numpy()})]
        metas = [sample.metainfo for sample in data_samples]
        if self.scope == 'mmdet':
            levels = len(outputs) // 2
            results = self.host.bbox_head.predict_by_feat(outputs[:levels], outputs[levels:], batch_img_metas=metas,
                                                          rescale=True)
            return self.host.add_pred_to_datasample(data_samples, results)
        if self.scope == 'mmseg':
            seg_logits = self.host.decode_head.predict_by_feat(outputs[0], metas)
            return self.host.postprocess_result(seg_logits, data_samples)
        return self.host.head._get_predictions(outputs[0], data_samples)


register_model(OnnxRuntimeModel)


__all__ = ['QUANTIZED_OPS', 'OnnxRuntimeModel', 'calibration_inputs', 'choose_float_nodes', 'node_sensitivity',
           'output_agreement', 'prepare_for_quantization', 'quantizable_nodes', 'quantize_int8']
