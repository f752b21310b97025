"""Checks of a config's datasets before a run starts, so that bad input stops with one message
naming the file and the problem instead of a traceback from a dataloader worker.

Checked for every train/val/test dataloader whose dataset is COCO-style (mmdet), a
segmentation folder (mmseg) or an image list (mmpretrain's ``CustomDataset``/``ImageNet``):
the annotation file exists and is COCO (``images``, ``annotations``, ``categories``) or lists
``path label`` lines with labels below the head's classes, the split is not empty, the class
list agrees with the model's heads, and every image file exists. Small splits (up to ``DECODE_LIMIT`` images) are
also decoded, which catches corrupt files and images smaller than 32x32; in larger ones mmcv
names a corrupt file when it reaches it.
"""
import json
import os
import os.path as osp
from typing import Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config

from ..models.layers import MIN_SIZE

DECODE_LIMIT = 2000


class DatasetError(ValueError):
    """A dataset that cannot be used: the message names the file and the problem."""


def _datasets(cfg: Config, splits: Sequence[str]) -> Iterator[Tuple[str, dict]]:
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if loader and loader.get('dataset'):
            dataset = loader['dataset']
            while 'dataset' in dataset:  # RepeatDataset, ClassBalancedDataset, ...
                dataset = dataset['dataset']
            yield split, dataset


def _under_root(dataset: dict, sub: Optional[str]) -> str:
    root = dataset.get('data_root') or ''
    return osp.join(root, sub) if sub else root


def _model_classes(model: dict) -> List[Tuple[str, int]]:
    """(where, num_classes) of every head of the model config that declares one."""
    found = []

    def visit(node, where):
        if isinstance(node, dict):
            if 'num_classes' in node and isinstance(node['num_classes'], int):
                found.append((where, node['num_classes']))
            for key, value in node.items():
                visit(value, f'{where}.{key}')
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                visit(value, f'{where}[{i}]')

    visit(model, 'model')
    return found


#: The smallest image side accepted: the backbones' F4 stride.


def check_image(path: str) -> None:
    """Decodes one image (any mode: grayscale and RGBA files are read as colour by the pipelines)."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            image.load()
            width, height = image.size
    except Exception as error:
        raise DatasetError(f'{path}: not a readable image ({type(error).__name__}: {error})') from error
    if min(width, height) < MIN_SIZE:
        raise DatasetError(f'{path}: the image is {width}x{height} pixels; images must be at least '
                           f'{MIN_SIZE}x{MIN_SIZE}')


def _check_images(paths: List[str], split: str, where: str) -> None:
    if not paths:
        raise DatasetError(f'{where}: the {split} split is empty (no images)')
    missing = [p for p in paths if not osp.isfile(p)]
    if missing:
        raise DatasetError(f'{missing[0]}: image file not found ({len(missing)} of {len(paths)} images of the '
                           f'{split} split listed in {where} are missing)')
    if len(paths) <= DECODE_LIMIT:
        for path in paths:
            check_image(path)


def check_coco(dataset: dict, split: str, classes: Optional[tuple]) -> None:
    ann_file = dataset.get('ann_file', '')
    path = ann_file if osp.isabs(ann_file) else _under_root(dataset, ann_file)
    if not osp.isfile(path):
        raise DatasetError(f'{path}: annotation file of the {split} split not found')
    try:
        with open(path) as f:
            coco = json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise DatasetError(f'{path}: not a COCO annotation file (not JSON: {error})') from error
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ('images', 'annotations', 'categories')):
        keys = sorted(coco) if isinstance(coco, dict) else type(coco).__name__
        raise DatasetError(f'{path}: not a COCO annotation file: expected the lists "images", "annotations" and '
                           f'"categories", found {keys}')
    names = [c.get('name') for c in coco['categories']]
    if classes is not None and not set(classes) <= set(names):
        raise DatasetError(f'{path}: classes {sorted(set(classes) - set(names))} of the config are not among the '
                           f'file\'s categories {names}')
    prefix = (dataset.get('data_prefix') or {}).get('img', '')
    image_dir = _under_root(dataset, prefix)
    _check_images([osp.join(image_dir, im.get('file_name', '')) for im in coco['images']], split, path)


def check_seg_folder(dataset: dict, split: str) -> None:
    prefix = dataset.get('data_prefix') or {}
    image_dir = _under_root(dataset, prefix.get('img_path'))
    seg_dir = _under_root(dataset, prefix.get('seg_map_path'))
    for directory in (image_dir, seg_dir):
        if not osp.isdir(directory):
            raise DatasetError(f'{directory}: directory of the {split} split not found')
    suffix = dataset.get('img_suffix', '.jpg')
    seg_suffix = dataset.get('seg_map_suffix', '.png')
    images = sorted(f for f in os.listdir(image_dir) if f.endswith(suffix))
    _check_images([osp.join(image_dir, f) for f in images], split, image_dir)
    labels = [osp.join(seg_dir, f[:-len(suffix)] + seg_suffix) for f in images]
    missing = [p for p in labels if not osp.isfile(p)]
    if missing:
        raise DatasetError(f'{missing[0]}: label map not found ({len(missing)} of {len(labels)} in the {split} split)')


def check_image_list(dataset: dict, split: str, num_classes: Optional[int]) -> None:
    """An mmpretrain ``CustomDataset``/``ImageNet`` with a list file (``path label`` per line):
    the file exists and is not empty, every label is an integer below the head's classes, and
    every image exists (and, in small splits, decodes)."""
    ann_file = dataset.get('ann_file') or (f"meta/{dataset['split']}.txt" if dataset.get('split') else '')
    path = ann_file if osp.isabs(ann_file) else _under_root(dataset, ann_file)
    if not ann_file or (not dataset.get('ann_file') and not osp.isfile(path)):
        return  # a class-folder layout: mmpretrain names what it cannot read
    if not osp.isfile(path):
        raise DatasetError(f'{path}: image list of the {split} split not found')
    prefix = dataset.get('data_prefix') or dataset.get('split') or ''
    prefix = prefix.get('img_path', '') if isinstance(prefix, dict) else prefix
    image_dir = _under_root(dataset, prefix)
    images = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            label = fields[-1] if len(fields) > 1 else None
            if label is not None and not (label.isdigit() and (num_classes is None or int(label) < num_classes)):
                allowed = f'an integer in [0, {num_classes - 1}]' if num_classes else 'a non-negative integer'
                raise DatasetError(f'{path}:{number}: label {label!r} is invalid: expected {allowed} '
                                   '(the head\'s num_classes)')
            images.append(osp.join(image_dir, ' '.join(fields[:-1]) if label is not None else fields[0]))
    _check_images(images, split, path)


def check_datasets(cfg: Config, splits: Sequence[str] = ('train', 'val', 'test')) -> None:
    """Checks the datasets of ``cfg`` that a run reads (see the module docstring).

    Args:
        cfg (Config): The config.
        splits (sequence of str): Which of its ``{split}_dataloader`` datasets to check.

    Raises:
        DatasetError: the first problem found, naming the file.
    """
    heads = _model_classes(cfg.get('model', {}))
    for split, dataset in _datasets(cfg, splits):
        classes = (dataset.get('metainfo') or {}).get('classes')
        if classes is not None:
            wrong = [(where, n) for where, n in heads if n != len(classes)]
            if wrong:
                where, n = wrong[0]
                raise DatasetError(f'the {split} dataset has {len(classes)} classes {tuple(classes)} but '
                                   f'{where}.num_classes={n}: make them agree in the config')
        kind = dataset.get('type', '')
        if 'ann_file' in dataset and kind.split('.')[-1] in ('CocoDataset', 'CocoPanopticDataset', 'LVISDataset'):
            check_coco(dataset, split, tuple(classes) if classes else None)
        elif kind.split('.')[-1] in ('BaseSegDataset', 'ADE20KDataset') and dataset.get('data_prefix'):
            check_seg_folder(dataset, split)
        elif kind.split('.')[-1] in ('CustomDataset', 'ImageNet'):
            check_image_list(dataset, split, min((n for _, n in heads), default=None))
