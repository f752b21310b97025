"""Inference preparation (fused, channels-last), bfloat16 numerics and ONNX export with an
ONNX Runtime check."""
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from mmdet.structures.bbox import bbox_overlaps
from PIL import Image

from convmlp_mm import ConvMLP, PureMLP, prepare_inference
from convmlp_mm.analysis import TensorForward
from convmlp_mm.data import generate
from convmlp_mm.deployment import ExportError, TensorGraph, build_model
from convmlp_mm.models.fusion import FindsOutputLayers, Float32Output
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


#: Configs whose whole models are prepared: ours, and a host's own with a ResNet backbone and a head
#: whose output layers no earlier name list knew (ATSS: atss_cls, atss_reg, atss_centerness).
WHOLE_MODELS = dict({k: CONFIGS[k] for k in ('retinanet', 'mask_rcnn', 'sem_fpn')},
                    classifier='configs/classification/convmlp-s_8xb128-300e_in1k.py', atss_resnet=None)
#: mmdet's own ATSS config with a ResNet-18, as a user writes it on the host's base.
ATSS_R18 = '''_base_ = 'mmdet::atss/atss_r50_fpn_1x_coco.py'
model = dict(backbone=dict(depth=18, init_cfg=None), neck=dict(in_channels=[64, 128, 256, 512]))
'''
#: The layers each head's forward returns the outputs of, read from the hosts' heads (mmdet 3.3,
#: mmseg 1.2, mmpretrain 1.2) and ours.
HEAD_OUTPUT_LAYERS = {
    'retinanet': {'bbox_head.retina_cls', 'bbox_head.retina_reg'},
    'mask_rcnn': {'rpn_head.rpn_cls', 'rpn_head.rpn_reg', 'roi_head.bbox_head.fc_cls', 'roi_head.bbox_head.fc_reg',
                  'roi_head.mask_head.conv_logits'},
    'sem_fpn': {'decode_head.conv_seg'},
    'classifier': {'head.fc'},
    'atss_resnet': {'bbox_head.atss_cls', 'bbox_head.atss_reg', 'bbox_head.atss_centerness'},
}


def whole_model_outputs(name, model, scope, x):
    """The raw outputs of every head of the model, each head called as a module."""
    if name != 'mask_rcnn':
        return TensorForward(model, scope, *x.shape[-2:], mode='tensor')(x)
    # Mask R-CNN's tensor outputs depend on the order NMS keeps proposals in: its heads at fixed boxes instead
    boxes = torch.tensor([[0., 3., 5., 60., 90.], [0., 40., 20., 150., 120.]])
    feats = model.extract_feat(x)
    roi = model.roi_head
    return (model.rpn_head(feats), roi.bbox_head(roi.bbox_roi_extractor(feats[:4], boxes)),
            roi.mask_head(roi.mask_roi_extractor(feats[:4], boxes)))


@pytest.mark.parametrize('name', list(WHOLE_MODELS))
def test_prepared_whole_model_predicts_the_same_with_nothing_around_it(name, tmp_path):
    """As docs/deployment.md calls it: no context, float32 outputs within 1e-4 of the default
    model's; the output layers found by what they compute; the state dict's keys kept."""
    torch.manual_seed(0)
    config = osp.join(ROOT, WHOLE_MODELS[name]) if WHOLE_MODELS[name] else tmp_path / 'atss_r18.py'
    if name == 'atss_resnet':
        config.write_text(ATSS_R18)
    model, scope = build_model(str(config))
    if name != 'atss_resnet':
        randomise_norms(model.backbone)
    x = torch.rand(1, 3, 128, 160) * 4 - 2
    keys = set(model.state_dict())
    with torch.no_grad():
        expected = whole_model_outputs(name, model, scope, x)
        prepare_inference(model)
        got = whole_model_outputs(name, model, scope, x)
        again = whole_model_outputs(name, model, scope, x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = whole_model_outputs(name, model, scope, x)
            if scope != 'mmpretrain':  # post-processing (NMS, RoIAlign of the masks) on bfloat16 features
                assert len(TensorForward(model, scope, 128, 160, mode='predict')(x)) == 1
    found = {n for n, m in model.named_modules() if isinstance(m, Float32Output)}
    assert found == HEAD_OUTPUT_LAYERS[name]
    assert not any(isinstance(m, FindsOutputLayers) for m in model.modules())  # each head its own class again
    assert all(t.dtype == torch.float32 for t in flat(low))
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    # our backbones lose the norms fuse() folds; every other key stays
    ours = set() if name == 'atss_resnet' else {k for k in keys | set(model.state_dict()) if k.startswith('backbone.')}
    assert set(model.state_dict()) - ours == keys - ours
    assert len(flat(got)) == len(flat(expected)) == len(flat(again)) > 0
    for a, b, c in zip(flat(got), flat(again), flat(expected)):
        assert a.shape == c.shape and rel_err(a, c) < 1e-4 and torch.equal(a, b)


def test_prepared_roi_align_reads_channels_last_maps_as_the_default():
    """mmcv's RoIAlign on a channels-last map in a prepared model (its kernel alone reads NCHW)."""
    from mmcv.ops import RoIAlign
    layer = RoIAlign((7, 7), spatial_scale=0.25, sampling_ratio=0)
    x = torch.rand(1, 8, 20, 24)
    boxes = torch.tensor([[0., 3., 5., 60., 70.], [0., 40., 20., 90., 75.]])
    expected = layer(x, boxes)
    assert not torch.allclose(layer(x.to(memory_format=torch.channels_last), boxes), expected)  # the kernel's reading
    prepare_inference(layer)
    assert torch.equal(layer(x.to(memory_format=torch.channels_last), boxes), expected)
    low = layer(x.to(torch.bfloat16).to(memory_format=torch.channels_last), boxes)
    assert low.dtype == torch.bfloat16 and rel_err(low, expected) < 1e-2


def test_trained_mask_rcnn_prepared_gives_the_same_boxes_scores_and_masks(tmp_path):
    """The quickstart Mask R-CNN trained by tools/train.py, prepared as the docs show: every
    detection of the default model is found again (same label, box IoU > 0.999, score within
    1e-4, masks differing in under 0.1 % of their pixels)."""
    generate(str(tmp_path / 'data/shapes'), num_train=8, num_val=2, size=(96, 128), seed=3)
    config = osp.join(ROOT, 'configs/quickstart/mask-rcnn_convmlp-s_shapes.py')
    proc = tool_runner.run([sys.executable, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', 'work',
                            '--cfg-options', 'train_cfg.max_epochs=3', 'train_cfg.val_interval=10',
                            'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, scope = build_model(config, str(tmp_path / 'work/epoch_3.pth'))
    model.test_cfg.rcnn.score_thr = 0.01  # enough detections to compare after a short training
    image = torch.from_numpy(np.array(Image.open(tmp_path / 'data/shapes/coco/val/val_00000.jpg'))[..., ::-1].copy())
    x = model.data_preprocessor(dict(inputs=[image.permute(2, 0, 1)]), False)['inputs']  # (1, 3, H, W)
    predict = TensorForward(model, scope, *x.shape[-2:], mode='predict')
    with torch.no_grad():
        expected = predict(x)[0].pred_instances
        prepare_inference(model)
        got = predict(x)[0].pred_instances
    assert 10 <= len(expected) == len(got)
    iou = bbox_overlaps(expected.bboxes, got.bboxes)
    match = iou.argmax(1)
    assert torch.equal(got.labels[match], expected.labels) and bool((iou.max(1).values > 0.999).all())
    assert (got.scores[match] - expected.scores).abs().max() < 1e-4
    assert (got.masks[match] != expected.masks).float().mean() < 1e-3


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
def test_onnx_export_matches_pytorch_at_three_sizes(tmp_path, name, part):
    """With the exporter compat chooses (dynamo on the newest stack), without a deprecation warning."""
    pytest.importorskip('onnxruntime')
    out = tmp_path / f'{name}-{part}.onnx'
    code, text = export([osp.join(ROOT, CONFIGS[name]), '--out', str(out), '--shape', '96', '128', '--part', part,
                         '--check'], tmp_path)
    assert code == 0, text
    assert 'check 1x96x128: max' in text and 'check 1x73x101: max' in text  # the second size odd
    assert 'check 2x120x160: max' in text  # a batch of two at a third size
    assert 'check passed' in text and out.stat().st_size > 1e6
    torch_warnings = [line for line in text.splitlines() if 'Warning' in line and '/torch/' in line]
    assert not torch_warnings and 'TorchScript-based' not in text and 'dynamic_axes' not in text
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
