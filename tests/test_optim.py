"""Layer-wise learning-rate decay: our backbones answer mmpretrain's get_layer_depth, so its
constructor works on our classifiers, and ours does the same for detectors and segmentors."""
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

import convmlp_mm  # noqa: F401  (registers the constructor)
from convmlp_mm import ConvMLP, PureMLP

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RATE, LR = 0.5, 1e-3


def build_optimizer(scope, model, constructor):
    registry = __import__(f'{scope}.registry', fromlist=['OPTIM_WRAPPER_CONSTRUCTORS'])
    cfg = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=LR, weight_decay=0.05))
    with DefaultScope.overwrite_default_scope(scope):
        wrapper = registry.OPTIM_WRAPPER_CONSTRUCTORS.build(
            dict(type=constructor, optim_wrapper_cfg=cfg, paramwise_cfg=dict(layer_decay_rate=RATE)))(model)
    return {name: group['lr'] for group in wrapper.optimizer.param_groups for name in [group['param_name']]}


@pytest.mark.parametrize('family, arch, units', [(ConvMLP, 's', 11), (PureMLP, 's', 11), (ConvMLP, 'l', 19),
                                                (ConvMLP, 'table2-row2', 10)])
def test_layer_depths_cover_every_parameter_in_input_order(family, arch, units):
    backbone = family(arch)
    assert len(backbone.layer_units()) == units
    depths = [backbone.get_layer_depth(f'backbone.{n}', 'backbone.') for n, _ in backbone.named_parameters()]
    assert {n for _, n in depths} == {units + 1}
    assert [d for d, _ in depths] == sorted(d for d, _ in depths)  # parameters come in input order
    assert {d for d, _ in depths} == set(range(units))
    assert backbone.get_layer_depth('head.fc.weight', 'backbone.') == (units, units + 1)


def test_mmpretrain_constructor_decays_our_classifier():
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs/classification/convmlp-s_8xb128-300e_in1k.py'))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    lrs = build_optimizer('mmpretrain', model, 'LearningRateDecayOptimWrapperConstructor')
    assert lrs['backbone.tokenizer.block.0.weight'] == pytest.approx(LR * RATE ** 11)
    assert lrs['backbone.conv_stages.conv_blocks.1.0.weight'] == pytest.approx(LR * RATE ** 9)
    assert lrs['backbone.conv_stages.downsample.weight'] == pytest.approx(LR * RATE ** 9)
    assert lrs['backbone.stages.2.blocks.1.channel_mlp1.fc1.weight'] \
        == pytest.approx(LR * RATE)
    assert lrs['head.fc.weight'] == lrs['head.norm.weight'] == pytest.approx(LR)


@pytest.mark.parametrize('scope, path', [('mmdet', 'configs/retinanet/retinanet_convmlp-s_fpn_1x_coco.py'),
                                         ('mmseg', 'configs/sem_fpn/fpn_puremlp-s_8xb2-40k_ade20k-512x512.py')])
def test_our_constructor_decays_detector_and_segmentor_backbones(scope, path):
    cfg = Config.fromfile(osp.join(ROOT, path))
    cfg.model.backbone.init_cfg = None
    registry = __import__(f'{scope}.registry', fromlist=['MODELS'])
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.MODELS.build(cfg.model)
    lrs = build_optimizer(scope, model, 'BackboneLayerDecayOptimWrapperConstructor')
    units = len(model.backbone.layer_units())
    assert lrs['backbone.tokenizer.block.0.weight'] == pytest.approx(LR * RATE ** units)
    outside = {n: lr for n, lr in lrs.items() if not n.startswith('backbone.')}
    assert outside and all(lr == pytest.approx(LR) for lr in outside.values())
    assert len({round(lr / LR, 12) for n, lr in lrs.items() if n.startswith('backbone.')}) == units


def test_our_constructor_names_a_backbone_without_depths():
    from mmdet.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs/retinanet/retinanet_r18_fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    with pytest.raises(TypeError, match='RetinaNet has no backbone with get_layer_depth'):
        build_optimizer('mmdet', model, 'BackboneLayerDecayOptimWrapperConstructor')
