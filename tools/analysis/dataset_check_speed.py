"""Time of the dataset check of tools/train.py and tools/test.py on a COCO-sized split.

    python tools/analysis/dataset_check_speed.py [--images 118287] [--annotations-per-image 7]
                                                 [--work-dir DIR] [--repeats 3]

Builds a split of ``--images`` images (COCO train2017 has 118,287 and 7.3 annotations per image),
the images hard links to a few JPEGs, with a COCO annotation file of mmdet's 80 classes, in
``--work-dir`` (a temporary folder by default, removed afterwards), then times
:func:`convmlp_mm.data.checks.check_datasets` on mmdet's own ``retinanet_r50_fpn_1x_coco.py``
pointed at it, and prints the median and the file's size as a markdown row.
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import sys
import tempfile
import time

from mmengine.config import Config

LINKS_PER_FILE = 60000  # ext4 allows 65,000 links to a file


def make_split(root: str, images: int, annotations_per_image: int = 1) -> str:
    """A COCO-style ``train2017`` split of ``images`` hard-linked JPEGs under ``root``, its
    annotation file ``annotations/instances_train2017.json``; returns the file's path."""
    from mmdet.datasets import CocoDataset
    from PIL import Image
    os.makedirs(osp.join(root, 'train2017'))
    os.makedirs(osp.join(root, 'annotations'))
    for i in range(images):
        path = osp.join(root, 'train2017', f'{i:012d}.jpg')
        if i % LINKS_PER_FILE == 0:
            source = path
            Image.new('RGB', (64, 48), 90).save(source)
        else:
            os.link(source, path)
    coco = dict(images=[dict(id=i, file_name=f'{i:012d}.jpg', width=64, height=48) for i in range(images)],
                annotations=[dict(id=i * annotations_per_image + k, image_id=i, category_id=1 + k % 80,
                                  bbox=[2.0, 3.0, 20.0, 10.0], area=200.0, iscrowd=0,
                                  segmentation=[[2.0, 3.0, 22.0, 3.0, 22.0, 13.0, 2.0, 13.0]])
                             for i in range(images) for k in range(annotations_per_image)],
                categories=[dict(id=i + 1, name=name) for i, name in enumerate(CocoDataset.METAINFO['classes'])])
    path = osp.join(root, 'annotations', 'instances_train2017.json')
    with open(path, 'w') as f:
        json.dump(coco, f)
    return path


def coco_config(root: str) -> Config:
    """mmdet's own RetinaNet config, its train split at ``root``."""
    cfg = Config.fromstring("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'", '.py')
    cfg.train_dataloader.dataset.data_root = root
    return cfg


def cpu() -> str:
    """The CPU's model name (Linux), and the cores this process may use."""
    try:
        with open('/proc/cpuinfo') as f:
            name = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f'{name}, {len(os.sched_getaffinity(0))} cores'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=118287, help='images in the split (default: COCO train2017)')
    parser.add_argument('--annotations-per-image', type=int, default=7)
    parser.add_argument('--work-dir', help='where the split is built (default: a temporary folder)')
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    from convmlp_mm.data.checks import check_datasets
    with tempfile.TemporaryDirectory(dir=args.work_dir) as root:
        ann_file = make_split(root, args.images, args.annotations_per_image)
        cfg = coco_config(root)
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            check_datasets(cfg, splits=('train',))
            seconds.append(time.perf_counter() - start)
        size = os.path.getsize(ann_file) / 2**20
    print(f'| dataset check, COCO-sized split ({args.images} images, {args.annotations_per_image} annotations each, '
          f'{size:.0f} MiB annotation file, files listed on a local disk) | {statistics.median(seconds):.2f} s '
          f'(median of {args.repeats}; {", ".join(f"{s:.2f}" for s in seconds)}) | {cpu()}, Python '
          f'{sys.version.split()[0]} |')


if __name__ == '__main__':
    main()
