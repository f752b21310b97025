"""The classification side: ImageNet (Tables 2-3) and transfer (Table 4) configs carry the
paper's recipes and build through mmpretrain; tools/train.py runs one of each on generated
data; the Pure-MLP pretraining feeds the Pure-MLP detectors; saliency maps and predictions."""
import os
import os.path as osp
import sys
from glob import glob

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import DefaultScope

from convmlp_mm.engine.checkpoint import load_checkpoint
from convmlp_mm.data import generate_classification
from published_convmlp import randomised

import tool_runner

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLS = osp.join(ROOT, 'configs/classification')
PUBLISHED = 'https://shi-labs.com/projects/convmlp/checkpoints/convmlp_{}_imagenet.pth'
#: parameters with the 1000-class head (ConvMLP: the published counts; Pure-MLP-S: Table 2's 7.88 M)
PARAMS = {'convmlp-s': 9_022_920, 'convmlp-m': 17_410_504, 'convmlp-l': 42_728_440}
TABLE3_TOP1 = {'s': 76.8, 'm': 79.0, 'l': 80.2}
TABLE4_TOP1 = {('s', 'cifar10'): 98.0, ('m', 'cifar10'): 98.6, ('l', 'cifar10'): 98.6,
               ('s', 'cifar100'): 87.4, ('m', 'cifar100'): 89.1, ('l', 'cifar100'): 88.6,
               ('s', 'flowers102'): 99.5, ('m', 'flowers102'): 99.5, ('l', 'flowers102'): 99.5}
TRANSFER_BATCH = {('l', d): 64 for d in ('cifar10', 'cifar100', 'flowers102')}
TRANSFER_BATCH.update({('s', 'flowers102'): 96, ('m', 'flowers102'): 96})


def config(name):
    return Config.fromfile(osp.join(CLS, name))


def build(cfg):
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(cfg.model)


def transforms(pipeline):
    return {t['type']: t for t in pipeline}


@pytest.mark.parametrize('path', sorted(glob(osp.join(CLS, '*.py'))), ids=osp.basename)
def test_every_classification_config_builds_through_mmpretrain(path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmpretrain' and cfg.custom_imports.imports == ['convmlp_mm']
    model = build(cfg)
    name = osp.basename(path).split('_')[0]
    n = sum(p.numel() for p in model.parameters())
    if name in PARAMS and path.endswith('in1k.py'):
        assert n == PARAMS[name]
    if name == 'puremlp-s':
        assert round(n / 1e6, 2) == 7.88


@pytest.mark.parametrize('arch', 'sml')
def test_imagenet_recipe_is_the_official_one(arch):
    cfg = config(f'convmlp-{arch}_8xb128-300e_in1k.py')
    opt = cfg.optim_wrapper.optimizer
    assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'  # mmengine's AmpOptimWrapper on GPUs
    assert (opt.type, opt.lr, opt.eps, opt.weight_decay) == ('AdamW', 5e-4, 1e-8, 0.05)
    assert cfg.train_dataloader.batch_size == 128 and cfg.auto_scale_lr.base_batch_size == 1024
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor * opt.lr) == ('LinearLR', 5, pytest.approx(1e-6))
    assert (cosine.type, cosine.begin, cosine.end, cosine.eta_min) == ('CosineAnnealingLR', 5, 300, 1e-5)
    assert cfg.train_cfg.max_epochs == 310  # 10 cool-down epochs at the minimum lr
    assert cfg.model.head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    assert cfg.model.train_cfg.augments == [dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]
    (ema, ) = [h for h in cfg.custom_hooks if h.type == 'EMAHook']
    assert ema.momentum == pytest.approx(1 - 0.99996) and ema.strict_load
    train = transforms(cfg.train_dataloader.dataset.pipeline)
    crop, aug, erase = train['RandomResizedCrop'], train['RandAugment'], train['RandomErasing']
    assert (crop.scale, crop.interpolation) == (224, 'bicubic') and train['RandomFlip'].prob == 0.5
    assert (aug.policies, aug.magnitude_level, aug.magnitude_std, aug.num_policies) == ('timm_increasing', 9, 0.5, 2)
    assert (erase.erase_prob, erase.mode) == (0.25, 'rand')
    test = transforms(cfg.test_dataloader.dataset.pipeline)
    assert (test['ResizeEdge'].scale, test['ResizeEdge'].interpolation, test['CenterCrop'].crop_size) == \
        (248, 'bicubic', 224)  # 224 / 0.9
    assert cfg.model.backbone.type == 'ConvMLP' and cfg.model.backbone.arch == arch


def test_table2_configs_carry_the_rows_and_the_ablation_recipe():
    for row in range(1, 8):
        (path, ) = glob(osp.join(CLS, f'table2-row{row}_*.py'))
        cfg = Config.fromfile(path)
        assert cfg.model.backbone.arch == f'table2-row{row}'
        if row <= 5:
            assert '4xb256-100e' in path and cfg.train_dataloader.batch_size == 256
            assert cfg.optim_wrapper.optimizer.lr == 1e-3 and cfg.param_scheduler[1].end == 100
            assert cfg.train_cfg.max_epochs == 110
        else:
            assert '8xb128-300e' in path and cfg.train_cfg.max_epochs == 310


@pytest.mark.parametrize('arch', 'sml')
def test_published_evaluation_configs_state_table3(arch):
    cfg = config(f'convmlp-{arch}_published_in1k.py')
    assert cfg.paper_top1 == TABLE3_TOP1[arch] and cfg.custom_hooks == [dict(type='SafeCheckpointLoadHook')]  # no EMA
    import timm
    assert timm.create_model(f'convmlp_{arch}').pretrained_cfg['crop_pct'] == 0.9


@pytest.mark.parametrize('arch', 'sml')
@pytest.mark.parametrize('dataset', ['cifar10', 'cifar100', 'flowers102'])
def test_transfer_configs_carry_table4s_recipe(arch, dataset):
    batch = TRANSFER_BATCH.get((arch, dataset), 128)
    (path, ) = glob(osp.join(CLS, f'convmlp-{arch}_8xb{batch}-50e_{dataset}.py'))
    cfg = Config.fromfile(path)
    assert f'{TABLE4_TOP1[arch, dataset]} %' in open(path).read()
    assert cfg.model.backbone.arch == arch and cfg.model.backbone.init_cfg.checkpoint == PUBLISHED.format(arch)
    assert cfg.model.head.num_classes == {'cifar10': 10, 'cifar100': 100, 'flowers102': 102}[dataset]
    assert cfg.train_dataloader.batch_size == batch and cfg.auto_scale_lr.base_batch_size == 8 * batch
    opt = cfg.optim_wrapper.optimizer
    assert (opt.lr, opt.weight_decay) == (3e-4, 0.05)
    warmup, cosine = cfg.param_scheduler
    assert (warmup.end, warmup.start_factor * opt.lr) == (10, pytest.approx(1e-6))
    assert (cosine.begin, cosine.end) == (10, 50) and cfg.train_cfg.max_epochs == 60
    assert cosine.eta_min == (1e-8 if dataset == 'flowers102' else 1e-5)
    assert not any(h.type == 'EMAHook' for h in cfg.custom_hooks)
    assert transforms(cfg.train_dataloader.dataset.pipeline)['RandomResizedCrop'].crop_ratio_range == (0.8, 1.0)
    assert transforms(cfg.test_dataloader.dataset.pipeline)['ResizeEdge'].scale == 224  # crop_pct 1.0
    assert cfg.train_dataloader.dataset.type == {'cifar10': 'CIFAR10', 'cifar100': 'CIFAR100',
                                                 'flowers102': 'Flowers102'}[dataset]


def test_cifar_pipelines_turn_32x32_arrays_into_224x224_inputs():
    import mmpretrain.datasets  # noqa: F401  (registers the transforms)
    cfg = config('convmlp-s_8xb128-50e_cifar10.py')
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        for loader in (cfg.train_dataloader, cfg.test_dataloader):
            packed = Compose(loader.dataset.pipeline)(dict(img=image.copy(), gt_label=3))
            assert tuple(packed['inputs'].shape) == (3, 224, 224)


@pytest.fixture(scope='module')
def shapes_cls(tmp_path_factory):
    return generate_classification(str(tmp_path_factory.mktemp('data') / 'shapes_cls'), 8, 4)


def run_tool(*args, cwd=ROOT, timeout=600):
    result = tool_runner.run([sys.executable, *args], cwd, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def small_run(data_root, epochs=1):
    """--cfg-options for a short run on the generated data (ImageNet layout, 3 classes)."""
    return ['--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
            f'val_dataloader.dataset.data_root={data_root}', f'test_dataloader.dataset.data_root={data_root}',
            'train_dataloader.batch_size=4', 'val_dataloader.batch_size=4', 'test_dataloader.batch_size=4',
            'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0',
            f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}']


@pytest.mark.slow  # starts a process or trains
def test_imagenet_config_trains_with_its_recipe_and_pure_mlp_feeds_the_detector(shapes_cls, tmp_path):
    """The Pure-MLP chain: two iterations of the Pure-MLP-S ImageNet recipe (Mixup/CutMix, EMA,
    AMP, RandAugment, 224 crops), then the Pure-MLP-S Mask R-CNN config's init_cfg reads what it
    wrote, strictly."""
    name = 'puremlp-s_8xb128-300e_in1k'
    run_tool(osp.join(ROOT, 'tools/train.py'), osp.join(CLS, f'{name}.py'), *small_run(shapes_cls), cwd=tmp_path)
    work_dir = tmp_path / 'work_dirs' / name
    written = work_dir / 'epoch_1.pth'
    assert written.is_file()
    cls_cfg = config(f'{name}.py')
    det_cfg = Config.fromfile(osp.join(ROOT, 'configs/mask_rcnn/mask-rcnn_puremlp-s_fpn_1x_coco.py'))
    expected = f'work_dirs/{name}/epoch_{cls_cfg.train_cfg.max_epochs}.pth'
    assert det_cfg.model.backbone.init_cfg.checkpoint == expected
    os.replace(written, tmp_path / expected)  # stands in for the 310-epoch run
    from mmdet.registry import MODELS
    os.chdir(tmp_path)
    try:
        with DefaultScope.overwrite_default_scope('mmdet'):
            detector = MODELS.build(det_cfg.model)
        detector.backbone.init_weights()
    finally:
        os.chdir(ROOT)
    state = load_checkpoint(str(tmp_path / expected), map_location='cpu')['state_dict']
    for key, value in detector.backbone.state_dict().items():
        assert torch.equal(value, state['backbone.' + key]), key


@pytest.mark.slow  # starts a process or trains
def test_transfer_config_trains_from_a_published_layout_checkpoint(shapes_cls, tmp_path):
    published = tmp_path / 'convmlp_s_imagenet.pth'
    torch.save(randomised('s').state_dict(), published)
    options = small_run(shapes_cls)
    options += [f'model.backbone.init_cfg.checkpoint={published}', 'model.head.num_classes=3',
                'data_preprocessor.num_classes=3',
                *[f'{s}_dataloader.dataset.type=ImageNet' for s in ('train', 'val', 'test')],
                'val_dataloader.dataset.split=val', 'test_dataloader.dataset.split=val',
                'val_evaluator.topk=(1,)', 'test_evaluator.topk=(1,)']  # 3 classes: no top-5
    out = run_tool(osp.join(ROOT, 'tools/train.py'), osp.join(CLS, 'convmlp-s_8xb96-50e_flowers102.py'), *options,
                   '--work-dir', str(tmp_path / 'work'), cwd=tmp_path)
    assert 'accuracy/top1' in out or (tmp_path / 'work' / 'epoch_1.pth').is_file()


@pytest.mark.slow  # starts a process or trains
def test_classification_list_with_a_bad_label_stops_with_one_error(shapes_cls, tmp_path):
    import shutil
    root = tmp_path / 'bad'
    shutil.copytree(shapes_cls, root)
    with open(root / 'meta' / 'train.txt', 'a') as f:
        f.write('triangle/x.png 7\n')
    result = tool_runner.run([sys.executable, osp.join(ROOT, 'tools/train.py'),
                              osp.join(ROOT, 'configs/quickstart/convmlp-s_shapes-cls.py'),
                              '--cfg-options', f'train_dataloader.dataset.data_root={root}',
                              '--work-dir', str(tmp_path / 'work')], ROOT)
    assert result.returncode == 2
    assert "train.txt:9: label '7' is invalid: expected an integer in [0, 2]" in result.stderr
    assert not (tmp_path / 'work').exists()


@pytest.mark.slow  # starts a process or trains
@pytest.mark.stack_independent('an mmpretrain training and drawing; classification trains on torch 2.1 in '
                               'test_classification\'s recipe tests and test_cluster')
def test_quickstart_trains_then_draws_predictions_and_saliency(shapes_cls, tmp_path):
    config_path = osp.join(ROOT, 'configs/quickstart/convmlp-s_shapes-cls.py')
    options = ['--cfg-options', f'train_dataloader.dataset.data_root={shapes_cls}',
               f'val_dataloader.dataset.data_root={shapes_cls}', f'test_dataloader.dataset.data_root={shapes_cls}',
               'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'train_dataloader.num_workers=0',
               'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0']
    work = tmp_path / 'work'
    run_tool(osp.join(ROOT, 'tools/train.py'), config_path, *options, '--work-dir', str(work))
    checkpoint = open(work / 'last_checkpoint').read().strip()
    out = run_tool(osp.join(ROOT, 'tools/test.py'), config_path, checkpoint, *options, '--work-dir', str(work))
    assert 'accuracy/top1' in out
    images = sorted(glob(osp.join(shapes_cls, 'val/*/*.png')))[:2]
    run_tool(osp.join(ROOT, 'tools/infer.py'), config_path, checkpoint, *images, '--out-dir', str(tmp_path / 'pred'),
             '--montage', str(tmp_path / 'grid.png'))
    assert (tmp_path / 'grid.png').is_file() and len(os.listdir(tmp_path / 'pred')) == 2
    out = run_tool(osp.join(ROOT, 'tools/visualize_saliency.py'), config_path, checkpoint, *images,
                   '--out', str(tmp_path / 'saliency.png'))
    assert (tmp_path / 'saliency.png').is_file()
    for image in images:  # "PATH: CLASS PROBABILITY" per image
        (line, ) = [line for line in out.splitlines() if line.startswith(image + ': ')]
        assert line.split()[1] in ('rectangle', 'ellipse', 'triangle') and 0 < float(line.split()[2]) <= 1


@pytest.mark.slow  # starts a process or trains
def test_saliency_is_the_input_gradient_of_the_predicted_score(shapes_cls):
    """The map equals the max over channels of |d score / d input|, computed by hand."""
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        import visualize_saliency
    finally:
        sys.path.pop(0)
    cfg = Config.fromfile(osp.join(ROOT, 'configs/quickstart/convmlp-s_shapes-cls.py'))
    cfg.model.data_preprocessor = cfg.data_preprocessor  # as the runner and mmpretrain's init_model do
    model = build(cfg)
    model.init_weights()
    model.eval()
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
        path = sorted(glob(osp.join(shapes_cls, 'val/*/*.png')))[0]
        image, grad, label, prob = visualize_saliency.saliency(model, pipeline, path)
        packed = pipeline(dict(img_path=path))
    x = model.data_preprocessor(dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']]), False)['inputs']
    x.requires_grad_(True)
    logits = model(x, mode='tensor')[0]
    assert int(logits.argmax()) == label and abs(float(logits.softmax(-1)[label]) - prob) < 1e-6
    logits[label].backward()
    expected = x.grad[0].abs().amax(0)
    assert np.allclose(grad, (expected / expected.max()).numpy(), atol=1e-6)
    assert image.shape == (64, 64, 3) and grad.shape == (64, 64) and grad.max() == 1.0
