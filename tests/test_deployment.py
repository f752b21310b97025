"""Inference preparation (fused, channels-last), bfloat16 numerics and ONNX export with an
ONNX Runtime check."""
import os.path as osp
import sys

import pytest
import torch

from convmlp_mm import ConvMLP, PureMLP, prepare_inference
from convmlp_mm.analysis import TensorForward
from convmlp_mm.deployment import ExportError, TensorGraph, build_model
from convmlp_mm.engine import mmcv_ops_for_prepared_models
from convmlp_mm.models.fusion import OUTPUT_LAYERS, Float32Output
from toy import randomise_norms

import tool_runner

pytestmark = pytest.mark.slow  # ONNX exports and whole detectors

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    'retinanet': 'configs/retinanet/retinanet_convmlp-s_fpn_1x_coco.py',
    'mask_rcnn': 'configs/mask_rcnn/mask-rcnn_convmlp-s_fpn_1x_coco.py',
    'sem_fpn': 'configs/sem_fpn/fpn_convmlp-s_8xb2-40k_ade20k-512x512.py',
    'puremlp_sem_fpn': 'configs/sem_fpn/fpn_puremlp-s_8xb2-40k_ade20k-512x512.py',
}


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def flat(tensors):
    """The tensors of nested lists and tuples, in order."""
    return [tensors] if isinstance(tensors, torch.Tensor) else [t for item in tensors for t in flat(item)]


@pytest.mark.parametrize('family', [ConvMLP, PureMLP])
def test_prepared_backbone_gives_the_same_maps_in_channels_last_memory(family):
    model = randomise_norms(family('s')).eval()
    x = torch.rand(1, 3, 97, 130)
    with torch.no_grad():
        expected = model(x)
        got = prepare_inference(model)(x)
    assert [tuple(f.shape) for f in got] == [(1, c, h, w) for c, (h, w) in
                                              zip(model.channels, [(25, 33), (13, 17), (7, 9), (4, 5)])]
    for a, b in zip(got, expected):
        assert a.is_contiguous(memory_format=torch.channels_last) and rel_err(a, b) < 1e-5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize('name', ['retinanet', 'mask_rcnn', 'sem_fpn'])
def test_prepared_whole_model_predicts_the_same(name):
    """Neck and heads in channels-last memory: the same predictions as the default model."""
    torch.manual_seed(0)
    model, scope = build_model(osp.join(ROOT, CONFIGS[name]))
    randomise_norms(model.backbone)
    x = torch.rand(1, 3, 128, 160) * 4 - 2
    boxes = torch.tensor([[0., 3., 5., 60., 90.], [0., 40., 20., 150., 120.]])

    def outputs():
        if name != 'mask_rcnn':
            return TensorForward(model, scope, 128, 160, mode='tensor')(x)
        # its tensor outputs depend on the order NMS keeps proposals in: the RPN's outputs and RoI
        # features at fixed boxes instead
        feats = model.extract_feat(x)
        return model.rpn_head(feats), model.roi_head.bbox_roi_extractor(feats[:4], boxes)

    with torch.no_grad(), mmcv_ops_for_prepared_models():
        expected = outputs()
        prepare_inference(model)
        got = outputs()
        predicted = TensorForward(model, scope, 128, 160, mode='predict')(x)  # post-processing runs on it
        with torch.autocast('cpu', dtype=torch.bfloat16):
            predicted_bf16 = TensorForward(model, scope, 128, 160, mode='predict')(x)
            low = outputs()
    # the heads' output layers (logits, box deltas) compute in float32 under autocast
    wrapped = [n for n, m in model.named_modules() if isinstance(m, Float32Output)]
    assert wrapped and all(n.rsplit('.', 1)[-1] in OUTPUT_LAYERS for n in wrapped)
    if name != 'mask_rcnn':
        assert all(t.dtype == torch.float32 for t in flat(low))
    assert model.backbone.out_memory_format == torch.channels_last
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    assert len(predicted) == len(predicted_bf16) == 1
    assert len(flat(got)) == len(flat(expected)) > 0
    for a, b in zip(flat(got), flat(expected)):
        assert a.shape == b.shape and rel_err(a, b) < 1e-4


@pytest.mark.parametrize('family', [ConvMLP, PureMLP])
def test_bfloat16_maps_within_2e_2_of_float32(family):
    """bf16 autocast of the default model and bf16 weights of the prepared one: F1-F4 within
    2e-2 relative of float32 (the published-statistics case: random norms, real-valued input)."""
    torch.manual_seed(0)
    model = randomise_norms(family('s', drop_path_rate=0.)).eval()
    x = torch.rand(1, 3, 96, 128) * 4 - 2
    with torch.no_grad():
        expected = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            autocast = model(x)
        prepare_inference(model).to(torch.bfloat16)
        weights = model(x.to(torch.bfloat16))
    for a, b, c in zip(autocast, weights, expected):
        assert rel_err(a, c) < 2e-2 and rel_err(b, c) < 2e-2
        assert b.dtype == torch.bfloat16


def export(args, cwd):
    proc = tool_runner.run([sys.executable, osp.join(ROOT, 'tools/deployment/export_onnx.py'), *args], cwd)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize('name,part', [('retinanet', 'backbone'), ('retinanet', 'model'), ('sem_fpn', 'model'),
                                       ('puremlp_sem_fpn', 'backbone')])
def test_onnx_export_matches_pytorch_at_two_sizes(tmp_path, name, part):
    pytest.importorskip('onnxruntime')
    out = tmp_path / f'{name}-{part}.onnx'
    code, text = export([osp.join(ROOT, CONFIGS[name]), '--out', str(out), '--shape', '96', '128', '--part', part,
                         '--check'], tmp_path)
    assert code == 0, text
    assert 'check 96x128: max' in text and 'check 73x101: max' in text  # the second size odd
    assert 'check passed' in text and out.stat().st_size > 1e6
    assert not (tmp_path / f'{name}-{part}.onnx.partial').exists()


def test_onnx_graph_has_dynamic_height_and_width(tmp_path):
    ort = pytest.importorskip('onnxruntime')
    out = tmp_path / 'sem_fpn.onnx'
    code, text = export([osp.join(ROOT, CONFIGS['sem_fpn']), '--out', str(out), '--shape', '64', '64'], tmp_path)
    assert code == 0, text
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    (image, ) = session.get_inputs()
    assert image.shape[0] == 'batch' and image.shape[2:] == ['height', 'width']
    (logits, ) = session.run(None, {'image': torch.rand(2, 3, 160, 96).numpy()})
    assert logits.shape == (2, 150, 40, 24)


def test_two_stage_detector_is_refused_naming_mmdeploy(tmp_path):
    model, scope = build_model(osp.join(ROOT, CONFIGS['mask_rcnn']))
    with pytest.raises(ExportError, match='two-stage detector.*mmdeploy.*part=backbone'):
        TensorGraph(model, scope, 'model')
    code, text = export([osp.join(ROOT, CONFIGS['mask_rcnn']), '--out', str(tmp_path / 'm.onnx')], tmp_path)
    assert code == 2 and text.count('error:') == 1 and 'mmdeploy' in text
    assert not (tmp_path / 'm.onnx').exists()


def test_export_names_bad_arguments(tmp_path):
    code, text = export([osp.join(ROOT, CONFIGS['sem_fpn']), '--out', str(tmp_path / 'x.onnx'), '--shape', '16', '64'],
                        tmp_path)
    assert code == 2 and '--shape 16 64' in text and 'at least 32' in text
    code, text = export([osp.join(ROOT, CONFIGS['sem_fpn']), str(tmp_path / 'missing.pth'), '--out',
                         str(tmp_path / 'x.onnx')], tmp_path)
    assert code == 2 and 'missing.pth' in text and 'does not exist' in text
