"""The embedded default dataset: generated, seeded images of coloured shapes on textured
backgrounds, written in the real formats so that mmdet's ``CocoDataset`` and mmseg's
``BaseSegDataset`` read them unchanged.

Layout under ``root``::

    coco/train/*.jpg, coco/val/*.jpg, coco/annotations/instances_{train,val}.json
    ade/images/{training,validation}/*.jpg, ade/annotations/{training,validation}/*.png

:func:`generate_classification` writes one shape per image for classification, in mmpretrain's
``CustomDataset`` layout: ``{train,val}/CLASS/*.png`` with ``meta/{train,val}.txt`` (path label).

COCO annotations carry boxes and RLE masks of the visible part of every shape (later shapes
occlude earlier ones). ADE-style label PNGs use 0 for "unlabelled" (ignored with
``reduce_zero_label=True``), 1 for the background and 2.. for the shape classes.
A ``DONE`` file is written last: a dataset without it is incomplete and is generated again.
"""
import json
import os
import os.path as osp
import shutil
from typing import Callable, Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ('rectangle', 'ellipse', 'triangle')
SEG_CLASSES = ('background', ) + CLASSES
PALETTE = [(120, 120, 120), (220, 20, 60), (0, 128, 255), (255, 200, 0)]
SPLITS = {'train': 'training', 'val': 'validation'}


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour gradient with stripes and noise, uint8 (H, W, 3)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, size=3)
    slope = rng.uniform(-0.4, 0.4, size=(2, 3))
    period, phase = rng.uniform(6, 24), rng.uniform(0, 2 * np.pi)
    stripes = 18 * np.sin((xx * np.cos(phase) + yy * np.sin(phase)) / period)[..., None]
    img = base + yy[..., None] * slope[0] + xx[..., None] * slope[1] + stripes
    img += rng.normal(0, 10, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_shape(rng: np.random.Generator, h: int, w: int, size_range: Tuple[float, float] = (0.15, 0.5),
                centre_range: Tuple[float, float] = (0.1, 0.9)) -> Tuple[int, np.ndarray]:
    """A random shape's class index and filled mask (H, W) bool: its size a fraction of the
    shorter side in ``size_range``, its centre a fraction of each side in ``centre_range``."""
    label = int(rng.integers(len(CLASSES)))
    size = rng.uniform(*size_range) * min(h, w)
    cx, cy = rng.uniform(*centre_range) * w, rng.uniform(*centre_range) * h
    aspect = rng.uniform(0.6, 1.6)
    half_w, half_h = size * aspect / 2, size / aspect / 2
    canvas = Image.new('L', (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    box = [cx - half_w, cy - half_h, cx + half_w, cy + half_h]
    if CLASSES[label] == 'rectangle':
        draw.rectangle(box, fill=1)
    elif CLASSES[label] == 'ellipse':
        draw.ellipse(box, fill=1)
    else:
        draw.polygon([(cx, cy - half_h), (cx - half_w, cy + half_h), (cx + half_w, cy + half_h)], fill=1)
    return label, np.asarray(canvas, dtype=bool)


def _sample(rng: np.random.Generator, h: int, w: int, max_shapes: int):
    """One image (H, W, 3), its semantic label map and its visible instances."""
    img = _texture(rng, h, w)
    semantic = np.ones((h, w), np.uint8)  # 1: background
    instances: List[Tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        label, mask = _draw_shape(rng, h, w)
        colour = rng.uniform(0, 255, size=3)
        img[mask] = np.clip(colour + rng.normal(0, 12, size=(int(mask.sum()), 3)), 0, 255).astype(np.uint8)
        semantic[mask] = label + 2
        instances = [(lab, m & ~mask) for lab, m in instances]  # occlusion
        instances.append((label, mask))
    return img, semantic, [(lab, m) for lab, m in instances if m.sum() >= 16]


def _coco_annotation(mask: np.ndarray, label: int, image_id: int, ann_id: int) -> Dict:
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return dict(id=ann_id, image_id=image_id, category_id=label + 1, segmentation=rle, iscrowd=0,
                area=int(mask.sum()), bbox=[x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1])


def generate(root: str = 'data/shapes', num_train: int = 200, num_val: int = 50, size: Tuple[int, int] = (128, 160),
             max_shapes: int = 4, seed: int = 0, force: bool = False) -> str:
    """Writes the dataset under ``root`` (unless a complete one is there) and returns ``root``.

    Args:
        root (str): Output directory.
        num_train (int): Training images.
        num_val (int): Validation images (the held-out split).
        size (tuple): (height, width) of every image.
        max_shapes (int): At most this many shapes per image (at least one).
        seed (int): The same seed gives the same bytes.
        force (bool): Regenerate even when a complete dataset exists.
    """
    stamp = dict(num_train=num_train, num_val=num_val, size=list(size), max_shapes=max_shapes, seed=seed)
    return _write_once(root, stamp, force, lambda tmp: _write_detection(tmp, num_train, num_val, size, max_shapes,
                                                                          seed))


def _write_once(root: str, stamp: dict, force: bool, write: Callable[[str], None]) -> str:
    """Runs ``write(tmp)`` into ``root + '.partial'`` and renames it to ``root`` with a ``DONE``
    stamp, unless ``root`` already holds a complete dataset of the same ``stamp``."""
    done = osp.join(root, 'DONE')
    text = json.dumps(stamp)
    if not force and osp.isfile(done) and open(done).read() == text:
        return root
    if stamp['num_train'] < 1 or stamp['num_val'] < 1:
        raise ValueError(f"num_train={stamp['num_train']}, num_val={stamp['num_val']}: each split needs at least "
                         'one image')
    tmp = root.rstrip('/') + '.partial'
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    with open(osp.join(tmp, 'DONE'), 'w') as f:
        f.write(text)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root


def _write_detection(tmp: str, num_train: int, num_val: int, size: Tuple[int, int], max_shapes: int,
                     seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = size
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    for split, count in (('train', num_train), ('val', num_val)):
        ade_split = SPLITS[split]
        for d in (f'coco/{split}', 'coco/annotations', f'ade/images/{ade_split}', f'ade/annotations/{ade_split}'):
            os.makedirs(osp.join(tmp, d), exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            img, semantic, instances = _sample(rng, h, w, max_shapes)
            name = f'{split}_{index:05d}'
            Image.fromarray(img).save(osp.join(tmp, f'coco/{split}/{name}.jpg'), quality=95)
            shutil.copyfile(osp.join(tmp, f'coco/{split}/{name}.jpg'),
                            osp.join(tmp, f'ade/images/{ade_split}/{name}.jpg'))
            Image.fromarray(semantic).save(osp.join(tmp, f'ade/annotations/{ade_split}/{name}.png'))
            images.append(dict(id=index + 1, file_name=f'{name}.jpg', height=h, width=w))
            for label, mask in instances:
                annotations.append(_coco_annotation(mask, label, index + 1, len(annotations) + 1))
        with open(osp.join(tmp, f'coco/annotations/instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def generate_classification(root: str = 'data/shapes_cls', num_train: int = 1500, num_val: int = 300,
                            size: Tuple[int, int] = (64, 64), seed: int = 0, force: bool = False) -> str:
    """Writes the classification dataset under ``root`` (unless a complete one is there) and
    returns ``root``: each image one shape of :data:`CLASSES` (a random colour, 35-75 % of the
    shorter side, fully inside) on a textured background, classes drawn uniformly.

    Args:
        root (str): Output directory.
        num_train (int): Training images.
        num_val (int): Validation images (the held-out split).
        size (tuple): (height, width) of every image.
        seed (int): The same seed gives the same bytes.
        force (bool): Regenerate even when a complete dataset exists.
    """
    stamp = dict(num_train=num_train, num_val=num_val, size=list(size), seed=seed)
    return _write_once(root, stamp, force, lambda tmp: _write_classification(tmp, num_train, num_val, size, seed))


def _write_classification(tmp: str, num_train: int, num_val: int, size: Tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = size
    os.makedirs(osp.join(tmp, 'meta'))
    for split, count in (('train', num_train), ('val', num_val)):
        for name in CLASSES:
            os.makedirs(osp.join(tmp, split, name))
        lines = []
        for index in range(count):
            img = _texture(rng, h, w)
            label, mask = _draw_shape(rng, h, w, size_range=(0.35, 0.75), centre_range=(0.4, 0.6))
            colour = rng.uniform(0, 255, size=3)
            img[mask] = np.clip(colour + rng.normal(0, 12, size=(int(mask.sum()), 3)), 0, 255).astype(np.uint8)
            path = f'{CLASSES[label]}/{split}_{index:05d}.png'
            Image.fromarray(img).save(osp.join(tmp, split, path))
            lines.append(f'{path} {label}\n')
        with open(osp.join(tmp, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(lines)
