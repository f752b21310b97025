"""A new user's path: the README's config snippets on the hosts' own base configs train through
tools/train.py on the generated data, and the hosts' own Python APIs load the checkpoints those
runs wrote, once published by tools/publish_checkpoint.py."""
import glob
import os
import os.path as osp
import re
import sys

import pytest
import torch
from mmengine.config import Config

from convmlp_mm import MLPClassifier
from convmlp_mm.data import CLASSES, generate, generate_classification

import tool_runner

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PUBLISHED = 'convmlp_s_imagenet.pth'

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group('host_configs')]


def readme_snippet(base: str) -> str:
    """The README's config block marked ``doc-test: config BASE``."""
    text = open(osp.join(ROOT, 'README.md')).read()
    return re.search(rf'<!-- doc-test: config {re.escape(base)} -->\n```python\n(.*?)```', text, re.S).group(1)


#: (README block, host base config, what the generated data needs besides data_root)
RUNS = {
    'retinanet': ('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'),
    'mask-rcnn': ('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'),
    'sem-fpn': ('mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py',
                'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'),
}


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    """The generated data, and the published ImageNet file (random weights, published layout) in
    the TORCH_HOME that the tools' subprocesses get, where the snippet's URL is found cached."""
    root = tmp_path_factory.mktemp('host_configs')
    data = generate(str(root / 'shapes'), num_train=2, num_val=2, size=(64, 96), seed=1)
    hub = root / 'torch_home' / 'hub' / 'checkpoints'
    hub.mkdir(parents=True)
    state = MLPClassifier('ConvMLP', 's').state_dict()
    torch.save({k[len('backbone.'):] if k.startswith('backbone.') else k: v for k, v in state.items()}, hub / PUBLISHED)
    return dict(root=root, data=data, env=dict(os.environ, TORCH_HOME=str(root / 'torch_home')))


def user_config(name: str, env) -> str:
    """The README snippet on the host's base, pointed at the generated data (one image, one
    iteration, small images for mmdet), written as a config file."""
    block, base = RUNS[name]
    cfg = Config.fromstring(f'_base_ = {base!r}\n' + readme_snippet(block), '.py')
    if cfg.default_scope == 'mmdet':
        heads = [cfg.model.get('bbox_head'), cfg.model.get('roi_head', {}).get('bbox_head'),
                 cfg.model.get('roi_head', {}).get('mask_head')]
        for head in filter(None, heads):
            head.num_classes = len(CLASSES)
        dataset = dict(data_root=osp.join(env['data'], 'coco'), metainfo=dict(classes=CLASSES))
        splits = dict(train=('annotations/instances_train.json', 'train/'),
                      val=('annotations/instances_val.json', 'val/'))
        for split, (ann, img) in splits.items():
            loader = cfg[f'{split}_dataloader']
            loader.dataset.update(dataset, ann_file=ann, data_prefix=dict(img=img))
            for step in loader.dataset.pipeline:
                if step.type == 'Resize':
                    step.scale = (160, 96)
        cfg.val_evaluator.ann_file = osp.join(env['data'], 'coco', 'annotations/instances_val.json')
        cfg.test_dataloader, cfg.test_evaluator = cfg.val_dataloader, cfg.val_evaluator
        cfg.train_cfg.max_epochs = 1
        cfg.train_dataloader.dataset.indices = 1
    else:
        for split in ('train', 'val', 'test'):
            cfg[f'{split}_dataloader'].dataset.data_root = osp.join(env['data'], 'ade')
        cfg.train_cfg.update(max_iters=1, val_interval=1)
        cfg.default_hooks.checkpoint.interval = 1
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].update(batch_size=1, num_workers=0, persistent_workers=False)
    path = str(env['root'] / f'{name}.py')
    cfg.dump(path)
    return path


@pytest.fixture(scope='module')
def trained(env):
    """name -> (config file, the checkpoint tools/train.py wrote)."""
    out = {}
    for name in RUNS:
        config, work_dir = user_config(name, env), str(env['root'] / 'work_dirs' / name)
        result = tool_runner.run([sys.executable, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work_dir,
                                  '--no-validate'], env['root'], env=env['env'])
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        out[name] = (config, open(osp.join(work_dir, 'last_checkpoint')).read().strip())
    return out


@pytest.mark.parametrize('name', list(RUNS))
def test_the_readme_snippet_on_the_hosts_base_trains(trained, name):
    config, checkpoint = trained[name]
    cfg = Config.fromfile(config)
    assert cfg.model.backbone.type == 'ConvMLP' and cfg.model.neck.in_channels == [64, 128, 256, 512]
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)['state_dict']  # written by this test
    assert state['backbone.tokenizer.block.0.weight'].shape == (32, 3, 3, 3)


def publish(env, checkpoint: str, name: str) -> str:
    """tools/publish_checkpoint.py CHECKPOINT published/NAME.pth; the file it wrote."""
    result = tool_runner.run([sys.executable, osp.join(ROOT, 'tools/publish_checkpoint.py'), checkpoint,
                              str(env['root'] / 'published' / f'{name}.pth')], env['root'], env=env['env'])
    assert result.returncode == 0, result.stderr
    (final, ) = glob.glob(str(env['root'] / 'published' / f'{name}-*.pth'))
    assert f'-> {final} (' in result.stdout
    return final


def test_a_published_checkpoint_is_weights_and_meta_readable_weights_only(env, trained):
    import hashlib
    final = publish(env, trained['retinanet'][1], 'retinanet')
    data = open(final, 'rb').read()
    assert final.endswith(f'-{hashlib.sha256(data).hexdigest()[:8]}.pth')
    checkpoint = torch.load(final, map_location='cpu', weights_only=True)  # no safe globals needed
    assert sorted(checkpoint) == ['meta', 'state_dict']
    assert checkpoint['meta']['dataset_meta']['classes'] == CLASSES
    assert not any(k.startswith('data_preprocessor') for k in checkpoint['state_dict'])


def test_mmdet_apis_load_a_published_checkpoint(env, trained):
    from mmdet.apis import DetInferencer, inference_detector, init_detector
    config, checkpoint = trained['mask-rcnn']
    weights = publish(env, checkpoint, 'mask-rcnn')
    image = osp.join(env['data'], 'coco', 'val', 'val_00000.jpg')
    result = DetInferencer(model=config, weights=weights, device='cpu', show_progress=False)(image)
    assert len(result['predictions'][0]['labels']) == len(result['predictions'][0]['scores'])
    model = init_detector(config, weights, device='cpu')
    assert model.dataset_meta['classes'] == CLASSES
    assert inference_detector(model, image).pred_instances is not None


def test_mmseg_apis_load_a_published_checkpoint(env, trained):
    from mmseg.apis import MMSegInferencer, inference_model, init_model
    config, checkpoint = trained['sem-fpn']
    weights = publish(env, checkpoint, 'sem-fpn')
    image = osp.join(env['data'], 'ade', 'images', 'validation', 'val_00000.jpg')
    result = MMSegInferencer(model=config, weights=weights, device='cpu')(image, show=False)
    assert result['predictions'].shape == (64, 96)
    assert inference_model(init_model(config, weights, device='cpu'), image).pred_sem_seg.data.shape == (1, 64, 96)


def test_mmpretrain_api_loads_a_published_checkpoint(env):
    from mmpretrain.apis import ImageClassificationInferencer
    data = generate_classification(str(env['root'] / 'shapes_cls'), num_train=4, num_val=2, size=(64, 64))
    config = str(env['root'] / 'cls.py')
    quick = osp.join(ROOT, 'configs/quickstart/convmlp-s_shapes-cls.py')
    open(config, 'w').write(f'_base_ = {quick!r}\ndata_root = {data!r}\n'
                            'train_cfg = dict(max_epochs=1)\n')
    cfg = Config.fromfile(config)
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].update(num_workers=0, persistent_workers=False)
        cfg[f'{split}_dataloader'].dataset.data_root = data
    cfg.dump(config)
    work_dir = str(env['root'] / 'work_dirs' / 'cls')
    result = tool_runner.run([sys.executable, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work_dir,
                              '--no-validate'], env['root'], env=env['env'])
    assert result.returncode == 0, result.stderr[-3000:]
    weights = publish(env, open(osp.join(work_dir, 'last_checkpoint')).read().strip(), 'cls')
    image = osp.join(data, 'val', open(osp.join(data, 'meta', 'val.txt')).read().split()[0])
    # mmpretrain's inferencer builds its pipeline in the current default scope, which an earlier
    # mmdet or mmseg inferencer of the same process has set: enter mmpretrain's, as docs/usage.md says
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        prediction = ImageClassificationInferencer(model=config, pretrained=weights, device='cpu')(image)[0]
    assert 0 <= prediction['pred_label'] < 3
