"""The generated default dataset and the dataset checks of tools/train.py and tools/test.py."""
import hashlib
import json
import os
import os.path as osp
import shutil
import sys

import numpy as np
import pytest
from mmengine.config import Config

from convmlp_mm.data import CLASSES, SEG_CLASSES, generate
from convmlp_mm.data.checks import DatasetError, check_datasets

import tool_runner

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
QUICK = osp.join(ROOT, 'configs/quickstart')


def tree_digest(root):
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            digest.update(name.encode())
            digest.update(open(osp.join(folder, name), 'rb').read())
    return digest.hexdigest()


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('data') / 'shapes')
    return generate(root, num_train=6, num_val=3, size=(48, 64), seed=3)


def test_generation_is_deterministic(shapes, tmp_path):
    again = generate(str(tmp_path / 'again'), num_train=6, num_val=3, size=(48, 64), seed=3)
    other = generate(str(tmp_path / 'other'), num_train=6, num_val=3, size=(48, 64), seed=4)
    assert tree_digest(shapes) == tree_digest(again) != tree_digest(other)
    assert not osp.exists(str(tmp_path / 'again') + '.partial')


def test_an_incomplete_dataset_is_generated_again(tmp_path):
    root = generate(str(tmp_path / 's'), num_train=2, num_val=1, size=(32, 32))
    os.remove(osp.join(root, 'DONE'))
    os.remove(osp.join(root, 'coco/train/train_00001.jpg'))
    generate(root, num_train=2, num_val=1, size=(32, 32))
    assert osp.isfile(osp.join(root, 'coco/train/train_00001.jpg')) and osp.isfile(osp.join(root, 'DONE'))


def test_coco_annotations_are_valid_for_pycocotools(shapes):
    from pycocotools.coco import COCO
    coco = COCO(osp.join(shapes, 'coco/annotations/instances_train.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    assert len(coco.getImgIds()) == 6 and coco.getAnnIds()
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann)
        assert mask.shape == (48, 64) and mask.sum() == ann['area']
        ys, xs = np.nonzero(mask)
        assert ann['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_mmdet_and_mmseg_datasets_read_it(shapes):
    from mmdet.datasets import CocoDataset
    from mmseg.datasets import BaseSegDataset
    det = CocoDataset(data_root=osp.join(shapes, 'coco'), ann_file='annotations/instances_val.json',
                      data_prefix=dict(img='val/'), metainfo=dict(classes=CLASSES), pipeline=[], test_mode=True)
    assert len(det) == 3 and det[0]['instances'][0]['bbox_label'] in range(len(CLASSES))
    seg = BaseSegDataset(data_root=osp.join(shapes, 'ade'), img_suffix='.jpg', seg_map_suffix='.png',
                         data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                         metainfo=dict(classes=SEG_CLASSES), reduce_zero_label=True, pipeline=[])
    assert len(seg) == 6
    from PIL import Image
    labels = np.asarray(Image.open(seg[0]['seg_map_path']))
    assert labels.shape == (48, 64) and set(np.unique(labels)) <= {1, 2, 3, 4}


def quick_cfg(name, data_root):
    """A quickstart config pointed at ``data_root`` (the shapes dataset root)."""
    cfg = Config.fromfile(osp.join(QUICK, name))
    for split in ('train', 'val', 'test'):
        dataset = cfg[f'{split}_dataloader'].dataset
        dataset.data_root = osp.join(data_root, 'coco' if 'ann_file' in dataset else 'ade')
    return cfg


@pytest.mark.parametrize('name', ['mask-rcnn_convmlp-s_shapes.py', 'fpn_convmlp-s_shapes.py'])
def test_checks_pass_on_the_generated_data(shapes, name):
    check_datasets(quick_cfg(name, shapes))


@pytest.fixture
def broken(shapes, tmp_path):
    root = str(tmp_path / 'shapes')
    shutil.copytree(shapes, root)
    return root


def expect_error(cfg, *fragments):
    with pytest.raises(DatasetError) as error:
        check_datasets(cfg)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_missing_image(broken):
    os.remove(osp.join(broken, 'coco/val/val_00001.jpg'))
    expect_error(quick_cfg('mask-rcnn_convmlp-s_shapes.py', broken), 'val_00001.jpg: image file not found')


def test_corrupt_image(broken):
    path = osp.join(broken, 'ade/images/validation/val_00002.jpg')
    open(path, 'wb').write(b'\xff\xd8 this is no jpeg')
    expect_error(quick_cfg('fpn_convmlp-s_shapes.py', broken), 'val_00002.jpg: not a readable image')


def test_annotation_file_that_is_not_coco(broken):
    path = osp.join(broken, 'coco/annotations/instances_train.json')
    json.dump([{'file': 'a.jpg'}], open(path, 'w'))
    expect_error(quick_cfg('mask-rcnn_convmlp-s_shapes.py', broken), 'instances_train.json: not a COCO annotation file')
    open(path, 'w').write('{not json')
    expect_error(quick_cfg('mask-rcnn_convmlp-s_shapes.py', broken), 'instances_train.json', 'not JSON')


def test_empty_split(broken):
    path = osp.join(broken, 'coco/annotations/instances_val.json')
    coco = json.load(open(path))
    json.dump(dict(coco, images=[], annotations=[]), open(path, 'w'))
    expect_error(quick_cfg('mask-rcnn_convmlp-s_shapes.py', broken), 'instances_val.json: the val split is empty')


def test_class_list_that_disagrees_with_the_model(shapes):
    cfg = quick_cfg('mask-rcnn_convmlp-s_shapes.py', shapes)
    cfg.model.roi_head.mask_head.num_classes = 5
    expect_error(cfg, 'has 3 classes', 'model.roi_head.mask_head.num_classes=5')


@pytest.mark.slow  # tools/train.py in a subprocess
def test_train_tool_stops_with_one_message(broken):
    os.remove(osp.join(broken, 'coco/val/val_00000.jpg'))
    workdir = osp.dirname(broken)
    os.makedirs(osp.join(workdir, 'data'))
    os.rename(broken, osp.join(workdir, 'data/shapes'))
    proc = tool_runner.run([sys.executable, osp.join(ROOT, 'tools/train.py'),
                            osp.join(QUICK, 'mask-rcnn_convmlp-s_shapes.py')], workdir)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        'error: data/shapes/coco/val/val_00000.jpg: image file not found (1 of 3 images of the val split listed ' \
        'in data/shapes/coco/annotations/instances_val.json are missing)'
    assert not osp.exists(osp.join(workdir, 'work_dirs'))
