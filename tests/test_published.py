"""The published checkpoints' layout, as data: tests/data/published_keys.txt holds the state-dict
keys and shapes of the official models, written from the official code (its header says which):
the ImageNet classifiers (``convmlp_{s,m,l}_imagenet.pth``; their backbone part is the official
detection and segmentation backbone, 180 ConvMLP-S and 303 ConvMLP-L tensors) and, outside the
backbone, the official RetinaNet, Mask R-CNN and Semantic FPN models. The files cannot be
downloaded here, so each test writes one of those names and shapes with random values and loads it
as users do: our backbone's ``init_cfg`` Pretrained, ``published_to_mmpretrain`` into mmpretrain's
classifier, timm's ``pretrained=True``, and tools/test.py and tools/infer.py with the published
detection and segmentation files (an mmdet 2.x / mmseg 0.x ``meta`` and an optimizer state) in our
nine ConvMLP configs. Each load is strict and each file tensor is found, unchanged, in the module
of ours that the official key names."""
import json
import os.path as osp
import sys
from typing import Dict, Tuple

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.registry import DefaultScope

from convmlp_mm import ConvMLP, published_to_mmpretrain
from convmlp_mm.data import generate
from published_convmlp import PublishedConvMLP

import tool_runner

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
KEYS = osp.join(ROOT, 'tests', 'data', 'published_keys.txt')
CONFIGS = {  # config -> file name of the published checkpoint (metafile Weights)
    **{f'configs/retinanet/retinanet_convmlp-{a}_fpn_1x_coco.py': f'detection/retinanet_convmlp_{a}_coco.pth'
       for a in 'sml'},
    **{f'configs/mask_rcnn/mask-rcnn_convmlp-{a}_fpn_1x_coco.py': f'detection/maskrcnn_convmlp_{a}_coco.pth'
       for a in 'sml'},
    **{f'configs/sem_fpn/fpn_convmlp-{a}_8xb2-40k_ade20k-512x512.py': f'segmentation/sem_fpn_convmlp_{a}_ade20k.pth'
       for a in 'sml'},
}
SMALL = '(96,64)'  # test-time scale: these are full-size models on the CPU
Layout = Dict[str, Tuple[int, ...]]


def read_layouts(path: str = KEYS) -> Dict[str, Layout]:
    """The sections of published_keys.txt: name -> {key: shape}."""
    layouts, section = {}, None
    for line in open(path):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        if line.startswith('['):
            section = layouts.setdefault(line[1:-1], {})
        else:
            key, *shape = line.split()
            section[key] = tuple(int(size) for size in shape)
    return layouts


OFFICIAL = read_layouts()


def classifier_layout(arch: str) -> Layout:
    """The official ImageNet classifier (the published ImageNet file's keys)."""
    return OFFICIAL[f'convmlp_{arch}_imagenet']


def backbone_layout(arch: str) -> Layout:
    """The official detection and segmentation backbone: the classifier less its head."""
    return {k: v for k, v in classifier_layout(arch).items() if not k.startswith(('norm.', 'head.'))}


def model_layout(config: str) -> Layout:
    """The official detector or segmentor of ``config``'s published file."""
    arch = config.split('convmlp-')[1][0]
    return {**{'backbone.' + k: v for k, v in backbone_layout(arch).items()},
            **OFFICIAL[osp.basename(CONFIGS[config])[:-len('.pth')]]}


def random_state(layout: Layout, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Tensors of ``layout``'s names and shapes, random: each one different, so that each can be
    found where it was loaded (and outputs stay finite: positive variances, scales near 1)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith('num_batches_tracked'):
            assert shape == ()
            state[key] = torch.tensor(1000)
        elif key.endswith('running_var'):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) == 1 and key.endswith('weight'):  # a norm's scale
            state[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) == 1:  # a bias or running mean
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = torch.Size(shape[1:]).numel()
            state[key] = torch.randn(shape, generator=generator) / fan_in ** 0.5
    return state


def shapes(state: Dict[str, torch.Tensor]) -> Layout:
    return {k: tuple(v.shape) for k, v in state.items()}


def assert_same_layout(ours: Layout, official: Layout) -> None:
    """Equal layouts, else the keys that differ: missing, unexpected, of another shape."""
    missing = sorted(official.keys() - ours.keys())
    unexpected = sorted(ours.keys() - official.keys())
    shape = sorted(f'{k}: official {official[k]} vs ours {ours[k]}' for k in official.keys() & ours.keys()
                   if official[k] != ours[k])
    assert not (missing or unexpected or shape), (f'missing {missing[:5]} ({len(missing)}), unexpected '
                                                  f'{unexpected[:5]} ({len(unexpected)}), shapes {shape[:5]}')


def assert_loaded(module: torch.nn.Module, state: Dict[str, torch.Tensor], prefix: str = '') -> None:
    """Each tensor of ``state`` (the file's keys less ``prefix``) is, unchanged, the one of ``module``
    under the same name, and ``module`` has no other."""
    ours = module.state_dict()
    assert ours.keys() == state.keys()
    different = [k for k, v in state.items() if not torch.equal(ours[k], v)]
    assert not different, f'{len(different)} tensors differ from the file under {prefix!r}: {different[:5]}'


# ------------------------------------------------------------------------------ the data
def test_the_official_layouts_have_the_measured_sizes():
    assert {a: len(backbone_layout(a)) for a in 'sl'} == dict(s=180, l=303)
    for arch, width in zip('sml', (512, 512, 768)):
        head = {k: v for k, v in classifier_layout(arch).items() if k not in backbone_layout(arch)}
        assert head == {'norm.weight': (width, ), 'norm.bias': (width, ), 'head.weight': (1000, width),
                        'head.bias': (1000, )}
    assert len(OFFICIAL) == 3 + len(CONFIGS)
    assert open(KEYS).readline().startswith('# The state-dict keys and shapes of the official ConvMLP models')


@pytest.mark.parametrize('arch', 'sml')
def test_our_backbone_has_the_official_keys_and_shapes(arch):
    assert_same_layout(shapes(ConvMLP(arch).state_dict()), backbone_layout(arch))


@pytest.mark.parametrize('arch', 'sml')
def test_the_reference_restatement_has_the_official_keys_and_shapes(arch):
    """tools/published_convmlp.py, the reference of the other tests' F1-F4 and logits."""
    assert_same_layout(shapes(PublishedConvMLP(arch).state_dict()), classifier_layout(arch))


# --------------------------------------------------------------- the ImageNet checkpoints
@pytest.fixture(scope='module', params=['s', 'm', 'l'])
def imagenet(request, tmp_path_factory):
    """(arch, path, state) of a published ImageNet file: the raw state dict the official
    ``convmlp_{s,m,l}(pretrained=True)`` reads with ``load_state_dict``."""
    arch = request.param
    state = random_state(classifier_layout(arch))
    path = tmp_path_factory.mktemp('imagenet') / f'convmlp_{arch}_imagenet.pth'
    torch.save(state, path)
    return arch, str(path), state


def backbone_part(state: Dict[str, torch.Tensor], prefix: str = '') -> Dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items()
            if k.startswith(prefix) and not k[len(prefix):].startswith(('norm.', 'head.'))}


def test_the_imagenet_file_is_our_backbones_init_cfg(imagenet):
    arch, path, state = imagenet
    model = ConvMLP(arch, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    assert_loaded(model, backbone_part(state))
    assert torch.equal(model.conv_stages.downsample.weight, state['conv_stages.downsample.weight'])
    assert torch.equal(model.tokenizer.block[4].running_var, state['tokenizer.block.4.running_var'])
    assert torch.equal(model.stages[2].blocks[1].connect.weight, state['stages.2.blocks.1.connect.weight'])


def test_the_imagenet_file_converts_into_mmpretrains_classifier(imagenet):
    from mmpretrain.registry import MODELS
    arch, path, state = imagenet
    width = classifier_layout(arch)['head.weight'][1]
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # whatever scope an earlier runner left
        model = MODELS.build(dict(type='ImageClassifier', backbone=dict(type='ConvMLP', arch=arch, out_indices=-1),
                                  head=dict(type='MLPClsHead', num_classes=1000, in_channels=width)))
    model.load_state_dict(published_to_mmpretrain(torch.load(path)), strict=True)
    assert_loaded(model.backbone, backbone_part(state))
    assert torch.equal(model.head.norm.weight, state['norm.weight']) and torch.equal(model.head.norm.bias,
                                                                                     state['norm.bias'])
    assert torch.equal(model.head.fc.weight, state['head.weight']) and torch.equal(model.head.fc.bias,
                                                                                   state['head.bias'])


def test_the_imagenet_file_is_timms_pretrained_weights(imagenet):
    """And the classifier computes what the reference restatement computes with the same file:
    each tensor is used where the official model uses it."""
    import timm
    arch, path, state = imagenet
    model = timm.create_model(f'convmlp_{arch}', pretrained=True, pretrained_cfg_overlay=dict(file=path)).eval()
    assert_loaded(model.backbone, backbone_part(state))
    assert all(torch.equal(model.get_parameter(k), state[k]) for k in ('norm.weight', 'norm.bias', 'head.weight',
                                                                       'head.bias'))
    reference = PublishedConvMLP(arch).eval()
    reference.load_state_dict(torch.load(path), strict=True)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------ the detection and segmentation checkpoints
def metafile_weights():
    index = yaml.safe_load(open(osp.join(ROOT, 'model-index.yml')))
    models = [m for path in index['Import'] for m in yaml.safe_load(open(osp.join(ROOT, path)))['Models']]
    return {m['Config']: m['Weights'] for m in models if m.get('Weights')}


def test_the_metafiles_name_the_published_files():
    weights = metafile_weights()
    for config, name in CONFIGS.items():
        assert weights[config] == 'https://shi-labs.com/projects/convmlp/checkpoints/' + name


def published_file(config: str, path) -> Dict[str, torch.Tensor]:
    """Writes a published checkpoint of ``config`` (the official layout, random weights, an mmdet
    2.x / mmseg 0.x ``meta`` and an optimizer state); returns its state dict."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    if cfg.default_scope == 'mmdet':
        from mmdet.datasets import CocoDataset as Dataset
        versions = dict(mmdet_version='2.11.0', mmcv_version='1.3.9')
    else:
        from mmseg.datasets import ADE20KDataset as Dataset
        versions = dict(mmseg_version='0.17.0', mmcv_version='1.3.9')
    state = random_state(model_layout(config))
    meta = dict(versions, env_info='sys.platform: linux\nPython: 3.8.10', seed=0, exp_name=osp.basename(config),
                config=cfg.pretty_text, CLASSES=tuple(Dataset.METAINFO['classes']), epoch=12, iter=87960,
                hook_msgs=dict(last_ckpt=f'work_dirs/{osp.basename(config)[:-3]}/latest.pth'),
                time='Fri Sep 10 09:21:37 2021')
    if cfg.default_scope == 'mmseg':
        meta.update(PALETTE=[list(c) for c in Dataset.METAINFO['palette']], iter=40000)
        del meta['epoch']
    optimizer = dict(state={0: dict(step=torch.tensor(1.), exp_avg=torch.zeros(2))},
                     param_groups=[dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4, amsgrad=False,
                                        params=[0])])
    torch.save(dict(meta=meta, state_dict=state, optimizer=optimizer), path)
    return state


def build(config: str) -> torch.nn.Module:
    """Our model of ``config``, with random weights (the published ImageNet file is not here)."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.model.backbone.init_cfg = None
    registry = __import__(f'{cfg.default_scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return registry.build(cfg.model)


@pytest.mark.parametrize('config', [c for c in CONFIGS if '-s_' in c], ids=lambda c: osp.basename(c)[:-3])
def test_the_published_file_fits_our_model_and_is_our_backbones_init_cfg(config, tmp_path):
    """In-process, ConvMLP-S (the tools below load all nine): every key of the file is a key of
    our model of that config, and its backbone part lands in our backbone's modules (the
    published detector as our backbone's pretrained weights, a fine-tuning start)."""
    path = str(tmp_path / osp.basename(CONFIGS[config]))
    state = published_file(config, path)
    model = build(config)
    assert_same_layout(shapes(model.state_dict()), model_layout(config))
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.backbone.tokenizer.block[0].weight, state['backbone.tokenizer.block.0.weight'])
    assert torch.equal(model.backbone.stages[1].blocks[3].channel_mlp2.fc1.bias,
                       state['backbone.stages.1.blocks.3.channel_mlp2.fc1.bias'])
    backbone = ConvMLP('s', init_cfg=dict(type='Pretrained', checkpoint=path))
    backbone.init_weights()
    assert_loaded(backbone, backbone_part(state, 'backbone.'))


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """COCO (80 classes) and ADE20K (150 classes) test sets of two small images each."""
    root = tmp_path_factory.mktemp('published')
    generate(str(root / 'shapes'), num_train=1, num_val=2, size=(64, 80), seed=3)
    from mmdet.datasets import CocoDataset
    coco = json.load(open(root / 'shapes/coco/annotations/instances_val.json'))
    coco['categories'] = [dict(id=i + 1, name=n) for i, n in enumerate(CocoDataset.METAINFO['classes'])]
    json.dump(coco, open(root / 'coco_val.json', 'w'))
    return root


def options(config: str, root) -> list:
    if 'sem_fpn' in config:
        return ['test_dataloader.dataset.data_root=' + str(root / 'shapes/ade'),
                f'test_dataloader.dataset.pipeline.1.scale={SMALL}', f'test_pipeline.1.scale={SMALL}']
    # random weights score below the configs' thresholds: keep every box, so that mAP is computed
    keep = 'model.test_cfg.rcnn.score_thr=0.0' if 'mask_rcnn' in config else 'model.test_cfg.score_thr=0.0'
    return [keep, 'test_dataloader.dataset.data_root=' + str(root / 'shapes/coco'),
            'test_dataloader.dataset.ann_file=' + str(root / 'coco_val.json'),
            'test_dataloader.dataset.data_prefix.img=val/', 'test_evaluator.ann_file=' + str(root / 'coco_val.json'),
            f'test_dataloader.dataset.pipeline.1.scale={SMALL}', 'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False']


@pytest.mark.slow  # the tools on nine full-size models
@pytest.mark.parametrize('config', list(CONFIGS), ids=lambda c: osp.basename(c)[:-3])
def test_published_layout_loads_strictly_through_test_and_infer(config, data, tmp_path):
    checkpoint = tmp_path / osp.basename(CONFIGS[config])
    published_file(config, checkpoint)
    test = tool_runner.run([sys.executable, osp.join(ROOT, 'tools/test.py'), osp.join(ROOT, config), checkpoint,
                            '--work-dir', tmp_path / 'work', '--cfg-options', *options(config, data)], tmp_path)
    out = test.stdout + test.stderr
    assert test.returncode == 0, out[-3000:]
    assert 'do not match exactly' not in out and 'missing keys' not in out
    assert ('mIoU' if 'sem_fpn' in config else 'coco/bbox_mAP') in out
    image = data / ('shapes/ade/images/validation/val_00000.jpg' if 'sem_fpn' in config
                    else 'shapes/coco/val/val_00000.jpg')
    infer = tool_runner.run([sys.executable, osp.join(ROOT, 'tools/infer.py'), osp.join(ROOT, config), checkpoint,
                             image, '--out-dir', tmp_path / 'pictures', '--cfg-options', *options(config, data)],
                            tmp_path)
    out = infer.stdout + infer.stderr
    assert infer.returncode == 0, out[-3000:]
    assert 'do not match exactly' not in out and 'missing keys' not in out
    assert osp.getsize(tmp_path / 'pictures' / 'val_00000.png') > 1000


@pytest.mark.slow
def test_a_checkpoint_of_another_arch_is_refused_by_test_and_infer(data, tmp_path):
    """Strict: the ConvMLP-S RetinaNet file into the ConvMLP-M config stops both tools with one
    error naming keys and shapes (mmengine alone would load what fits and log the rest)."""
    checkpoint = tmp_path / 'retinanet_convmlp_s_coco.pth'
    published_file('configs/retinanet/retinanet_convmlp-s_fpn_1x_coco.py', checkpoint)
    config = osp.join(ROOT, 'configs/retinanet/retinanet_convmlp-m_fpn_1x_coco.py')
    image = data / 'shapes/coco/val/val_00000.jpg'
    for args in (['tools/test.py', config, checkpoint, '--work-dir', tmp_path / 'work'],
                 ['tools/infer.py', config, checkpoint, image, '--out-dir', tmp_path / 'pictures']):
        proc = tool_runner.run([sys.executable, osp.join(ROOT, args[0]), *args[1:], '--cfg-options',
                                *options(config, data)], tmp_path)
        assert proc.returncode == 1, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
        assert errors == [f"error: checkpoint '{checkpoint}' does not fit RetinaNet:"], proc.stderr[-3000:]
        assert 'shape mismatches' in proc.stderr and 'checkpoint (' in proc.stderr
