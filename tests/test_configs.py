"""Every reproduction config builds through the registries, with the paper's parameter count."""
import importlib
import os.path as osp
from glob import glob

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BACKBONES = ['r18', 'puremlp-s', 'convmlp-s', 'r50', 'puremlp-m', 'convmlp-m', 'r101', 'puremlp-l', 'convmlp-l']
#: Tables 5-7 of the paper: trainable parameters in millions.
PAPER = {
    'retinanet/retinanet_{}_fpn_1x_coco.py': [21.3, 17.6, 18.7, 37.7, 25.9, 27.1, 56.7, 50.1, 52.9],
    'mask_rcnn/mask-rcnn_{}_fpn_1x_coco.py': [31.2, 27.5, 28.7, 44.2, 35.8, 37.1, 63.2, 59.5, 62.2],
    'sem_fpn/fpn_{}_8xb2-40k_ade20k-512x512.py': [15.5, 11.6, 12.8, 28.5, 19.9, 21.1, 47.5, 43.6, 46.3],
}
CASES = [(pattern.format(b), m) for pattern, ms in PAPER.items() for b, m in zip(BACKBONES, ms)]


def build_model(cfg):
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return importlib.import_module(f'{cfg.default_scope}.registry').MODELS.build(cfg.model)


def test_every_shipped_config_is_a_paper_config():
    shipped = {osp.relpath(p, osp.join(ROOT, 'configs')) for p in glob(osp.join(ROOT, 'configs/*/*.py'))}
    recipes = {'retinanet/retinanet_adamw_1x_coco.py', 'mask_rcnn/mask-rcnn_adamw_1x_coco.py',
               'sem_fpn/fpn_adamw_8xb2-40k_ade20k-512x512.py', '_base_/convmlp_runtime.py'}
    quickstart = {p for p in shipped if p.startswith('quickstart/')}
    classification = {p for p in shipped if p.startswith('classification/')}  # tests/test_classification.py
    assert shipped - recipes - quickstart - classification == {path for path, _ in CASES}


@pytest.mark.parametrize('path, paper_m', CASES, ids=[c[0].split('/')[1] for c in CASES])
def test_config_builds_with_the_paper_parameter_count(path, paper_m):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', path))
    model = build_model(cfg).train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    assert abs(trainable - paper_m) <= 0.15, f'{path}: {trainable:.2f} M trainable, paper {paper_m} M'


@pytest.mark.parametrize('pattern', list(PAPER))
def test_recipe_selects_the_runtime_parts(pattern):
    """The lines of configs/_base_/convmlp_runtime.py, in every recipe (and so every config)."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', pattern.format('convmlp-s')))
    assert cfg.custom_imports.imports == ['convmlp_mm']
    assert [h.type for h in cfg.custom_hooks] == ['SafeCheckpointLoadHook', 'RandomStateHook', 'FiniteLossHook']
    loop = 'ResumableEpochBasedTrainLoop' if cfg.default_scope == 'mmdet' else 'ResumableIterBasedTrainLoop'
    assert cfg.train_cfg.type == loop
    assert cfg.default_hooks.checkpoint.backend_args == dict(backend='atomic_local')


@pytest.mark.parametrize('pattern', list(PAPER))
def test_recipe_is_the_papers(pattern):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', pattern.format('convmlp-s')))
    assert cfg.optim_wrapper.optimizer.type == 'AdamW' and cfg.optim_wrapper.optimizer.weight_decay == 1e-4
    assert cfg.auto_scale_lr.base_batch_size == 16 and cfg.train_dataloader.batch_size == 2
    if cfg.default_scope == 'mmdet':
        assert cfg.optim_wrapper.optimizer.lr == 1e-4 and cfg.train_cfg.max_epochs == 12
        assert [s.type for s in cfg.param_scheduler] == ['LinearLR', 'MultiStepLR']
        assert cfg.param_scheduler[0].end == 500 and cfg.param_scheduler[1].milestones == [8, 11]
    else:
        assert cfg.optim_wrapper.optimizer.lr == 2e-4 and cfg.train_cfg.max_iters == 40000
        (poly, ) = cfg.param_scheduler
        assert (poly.type, poly.power, poly.eta_min, poly.end) == ('PolyLR', 0.9, 0.0, 40000)
