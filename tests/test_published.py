"""The published detection and segmentation checkpoints (mmdet 2.x and mmseg 0.x files of the
official repository) load strictly into our nine ConvMLP configs through tools/test.py and
tools/infer.py. The files cannot be downloaded here, so each test writes one of the same layout:
the official detectors' and segmentors' key names (equal to our models', measured on the
official ``DetConvMLP`` backbone: 180 ConvMLP-S and 303 ConvMLP-L tensors), an mmdet 2.x / mmseg
0.x ``meta`` (``CLASSES``, ``PALETTE``, the config as text, versions, ``hook_msgs``) and an
optimizer state. The weights are random; what is checked is that they are read, fit exactly and
predict."""
import json
import os.path as osp
import sys

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.registry import DefaultScope

from convmlp_mm.data import generate

import tool_runner

pytestmark = pytest.mark.slow  # the tools on nine full-size models

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {  # config -> file name of the published checkpoint (metafile Weights)
    **{f'configs/retinanet/retinanet_convmlp-{a}_fpn_1x_coco.py': f'detection/retinanet_convmlp_{a}_coco.pth'
       for a in 'sml'},
    **{f'configs/mask_rcnn/mask-rcnn_convmlp-{a}_fpn_1x_coco.py': f'detection/maskrcnn_convmlp_{a}_coco.pth'
       for a in 'sml'},
    **{f'configs/sem_fpn/fpn_convmlp-{a}_8xb2-40k_ade20k-512x512.py': f'segmentation/sem_fpn_convmlp_{a}_ade20k.pth'
       for a in 'sml'},
}
SMALL = '(96,64)'  # test-time scale: these are full-size models on the CPU


def metafile_weights():
    index = yaml.safe_load(open(osp.join(ROOT, 'model-index.yml')))
    models = [m for path in index['Import'] for m in yaml.safe_load(open(osp.join(ROOT, path)))['Models']]
    return {m['Config']: m['Weights'] for m in models if m.get('Weights')}


def test_the_metafiles_name_the_published_files():
    weights = metafile_weights()
    for config, name in CONFIGS.items():
        assert weights[config] == 'https://shi-labs.com/projects/convmlp/checkpoints/' + name


def published_layout(config: str, path) -> int:
    """Writes a checkpoint of the official layout for ``config``; returns its number of tensors."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.model.backbone.init_cfg = None  # random weights: the published ImageNet file is not here
    scope = cfg.default_scope
    if scope == 'mmdet':
        from mmdet.datasets import CocoDataset as Dataset
        from mmdet.registry import MODELS
        versions = dict(mmdet_version='2.11.0', mmcv_version='1.3.9')
    else:
        from mmseg.datasets import ADE20KDataset as Dataset
        from mmseg.registry import MODELS
        versions = dict(mmseg_version='0.17.0', mmcv_version='1.3.9')
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
    state = model.state_dict()
    meta = dict(versions, env_info='sys.platform: linux\nPython: 3.8.10', seed=0, exp_name=osp.basename(config),
                config=cfg.pretty_text, CLASSES=tuple(Dataset.METAINFO['classes']), epoch=12, iter=87960,
                hook_msgs=dict(last_ckpt=f'work_dirs/{osp.basename(config)[:-3]}/latest.pth'),
                time='Fri Sep 10 09:21:37 2021')
    if scope == 'mmseg':
        meta.update(PALETTE=[list(c) for c in Dataset.METAINFO['palette']], iter=40000)
        del meta['epoch']
    optimizer = dict(state={0: dict(step=torch.tensor(1.), exp_avg=torch.zeros(2))},
                     param_groups=[dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4, amsgrad=False,
                                        params=[0])])
    torch.save(dict(meta=meta, state_dict=state, optimizer=optimizer), path)
    return len(state)


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


@pytest.mark.parametrize('config', list(CONFIGS), ids=lambda c: osp.basename(c)[:-3])
def test_published_layout_loads_strictly_through_test_and_infer(config, data, tmp_path):
    checkpoint = tmp_path / osp.basename(CONFIGS[config])
    tensors = published_layout(config, checkpoint)
    assert tensors > 180
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


def test_a_checkpoint_of_another_arch_is_refused_by_test_and_infer(data, tmp_path):
    """Strict: the ConvMLP-S RetinaNet file into the ConvMLP-M config stops both tools with one
    error naming keys and shapes (mmengine alone would load what fits and log the rest)."""
    checkpoint = tmp_path / 'retinanet_convmlp_s_coco.pth'
    published_layout('configs/retinanet/retinanet_convmlp-s_fpn_1x_coco.py', checkpoint)
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
