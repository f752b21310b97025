"""Checks of a config's datasets before a run starts, so that bad input stops with one message
naming the file and the problem instead of a traceback from a dataloader worker.

Checked for every train/val/test dataloader whose dataset is COCO-style (mmdet's COCO, LVIS and
their subclasses), a segmentation folder (mmseg's datasets with ``img_path``/``seg_map_path``
prefixes) or an image list (mmpretrain's ``CustomDataset``/``ImageNet`` with a list file): the
annotation file exists and is COCO (``images``, ``annotations``, ``categories``) or lists
``path label`` lines with labels below the head's classes, the split is not empty, the class
list (the config's ``metainfo``, else the dataset class's own) agrees with the heads that classify
it (:data:`CLASSIFYING_HEADS`; a panoptic dataset's thing classes) and is among a COCO file's
categories, and every image file exists. Small splits (up to
``DECODE_LIMIT`` images) are also decoded, which catches corrupt files and images smaller than
32x32; in larger ones mmcv names a corrupt file when it reaches it.

Files are read as the hosts read them: through :mod:`mmengine.fileio` with the dataset's
``backend_args`` (local disks, s3, petrel, http), folders listed recursively as mmseg lists them,
and the images of a split found by listing each of their folders once (not one ``stat`` per
image). Where a backend cannot list or test a path (http), that check is skipped with one log
line; nothing is refused for being remote. Argument defaults the config leaves out (mmseg's
suffixes) are the dataset class's own.
"""
import inspect
import io
import json
import os
import os.path as osp
import posixpath
from collections import defaultdict
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine import fileio
from mmengine.config import Config
from mmengine.fileio import LocalBackend

from ..models.layers import MIN_SIZE

DECODE_LIMIT = 2000

#: The model config's heads that classify the dataset's classes, by path (a list entry is each
#: element of a list, as in cascade heads): the others (RPN, HTC's semantic head, panoptic
#: heads) have their own class counts.
CLASSIFYING_HEADS = ('bbox_head', 'roi_head.bbox_head', 'roi_head.mask_head', 'decode_head', 'auxiliary_head',
                     'head')

#: Heads at those paths whose classes are not the dataset's: STDC's boundary head (2 classes).
OWN_CLASS_HEADS = ('STDCHead',)

#: The hosts whose datasets take their labels from the class list (mmdet matches category names,
#: mmseg counts classes); mmpretrain's lists carry their own integer labels, so there only the
#: config's own ``metainfo`` classes are compared.
LABELS_FROM_CLASSES = ('mmdet', 'mmseg')

#: The COCO images' URL prefix that LVIS gives instead of a file name (mmdet strips it).
COCO_URL = 'http://images.cocodataset.org/'

Log = Callable[[str], None]


class DatasetError(ValueError):
    """A dataset that cannot be used: the message names the file and the problem."""


class Files:
    """A dataset's files through the :mod:`mmengine.fileio` backend that its ``backend_args``
    and each path's prefix select (one backend object per prefix); an operation the backend does
    not offer (mmengine's HTTP backend cannot test or list) is logged once and answered with None,
    and the check that needed it is skipped.

    Args:
        dataset (dict): The dataset config (``data_root``, ``backend_args``).
        split (str): The split, for messages.
        log (callable): Where the skip lines go.
    """

    def __init__(self, dataset: dict, split: str, log: Log) -> None:
        self.root = dataset.get('data_root') or ''
        self.backend_args = dataset.get('backend_args')
        self.split = split
        self.log = log
        self.skipped = set()
        self.backends = {}

    def backend(self, path: str) -> Any:
        prefix = path.split('://')[0] if '://' in path else ''
        if prefix not in self.backends:
            self.backends[prefix] = fileio.get_file_backend(path, backend_args=self.backend_args)
        return self.backends[prefix]

    def join(self, folder: str, name: str) -> str:
        """``folder/name`` as the backend joins them (as a URL where it has no ``join_path``)."""
        join = getattr(self.backend(folder), 'join_path', None)
        return join(folder, name) if join else posixpath.join(folder, name)

    def path(self, sub: Optional[str]) -> str:
        """``sub`` under ``data_root`` (an absolute path or a URL as it is), as mmengine joins them."""
        if not sub:
            return self.root
        if not self.root or '://' in sub or sub.startswith('/'):
            return sub
        return self.join(self.root, sub)

    def _ask(self, what: str, method: str, path: str, **kwargs) -> Any:
        backend = self.backend(path)
        call = getattr(backend, method, None)
        if call is not None:
            try:
                return call(path, **kwargs)
            except NotImplementedError:
                pass
        if what not in self.skipped:
            self.skipped.add(what)
            self.log(f'dataset check of the {self.split} split: {type(backend).__name__} cannot {what} ({path}); '
                     'that check is skipped')
        return None

    def isfile(self, path: str) -> Optional[bool]:
        return self._ask('test files', 'isfile', path)

    def isdir(self, path: str) -> Optional[bool]:
        return self._ask('test folders', 'isdir', path)

    def under(self, folder: str, name: str) -> str:
        """``name`` under ``folder`` where there is one (``name`` as it is where not)."""
        return self.join(folder, name) if folder and name else folder or name or '.'

    def list_files(self, folder: str, suffix: Optional[str] = None, recursive: bool = False) -> Optional[List[str]]:
        """The files under ``folder`` (relative paths, hidden ones left out, as mmengine lists
        them), or None where the backend cannot list."""
        if getattr(type(self.backend(folder)), 'list_dir_or_file', None) is LocalBackend.list_dir_or_file:
            return local_files(folder, suffix, recursive)
        listed = self._ask('list folders', 'list_dir_or_file', folder, list_dir=False, suffix=suffix,
                           recursive=recursive)
        return None if listed is None else list(listed)

    def read(self, path: str) -> bytes:
        return self.backend(path).get(path)

    def text(self, path: str, what: str) -> str:
        if self.isfile(path) is False:
            raise DatasetError(f'{path}: {what} of the {self.split} split not found')
        try:
            return self.backend(path).get_text(path)
        except FileNotFoundError as error:
            raise DatasetError(f'{path}: {what} of the {self.split} split not found') from error
        except OSError as error:  # a remote backend's errors (HTTP 404, ...)
            raise DatasetError(f'{path}: {what} of the {self.split} split cannot be read ({error})') from error
        except UnicodeDecodeError as error:
            raise DatasetError(f'{path}: {what} of the {self.split} split is not text ({error})') from error


def check_image(path: str, data: Optional[bytes] = None) -> None:
    """Decodes one image (a path, or its bytes ``data``; any mode: grayscale and RGBA files are
    read as colour by the pipelines)."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            image.load()
            width, height = image.size
    except Exception as error:
        raise DatasetError(f'{path}: not a readable image ({type(error).__name__}: {error})') from error
    if min(width, height) < MIN_SIZE:
        raise DatasetError(f'{path}: the image is {width}x{height} pixels; images must be at least '
                           f'{MIN_SIZE}x{MIN_SIZE}')


def local_files(folder: str, suffix: Optional[str], recursive: bool) -> List[str]:
    """What mmengine's local backend lists (files, not hidden, in sub-folders when ``recursive``),
    with one relative path per folder instead of one per file (2 s for COCO's 118,287 images)."""
    found = []
    for root, folders, names in os.walk(folder, followlinks=True):
        folders[:] = [name for name in folders if not name.startswith('.')]
        prefix = '' if root == folder else osp.relpath(root, folder) + '/'
        found += [prefix + name for name in names if not name.startswith('.') and name.endswith(suffix or '')]
        if not recursive:
            break
    return found


def missing_files(files: Files, folder: str, names: List[str]) -> Optional[List[str]]:
    """The paths of the ``names`` (relative to ``folder``) that do not exist, found with one
    listing per sub-folder; None where the backend cannot list (the check is skipped)."""
    by_folder = defaultdict(list)
    for name in names:
        sub, _, base = name.rpartition('/')
        by_folder[sub].append(base)
    missing = []
    for sub, bases in by_folder.items():
        where = files.under(folder, sub)
        listed = files.list_files(where) if files.isdir(where) is not False else []
        if listed is None:
            return None
        present = set(listed)
        missing += [files.join(where, base) for base in bases if base not in present]
    return missing


def check_images(files: Files, folder: str, names: List[str], where: str, listed: bool = False) -> None:
    """The split is not empty, every image (``names`` under ``folder``) exists (unless they were
    ``listed``) and, in small splits, decodes."""
    if not names:
        raise DatasetError(f'{where}: the {files.split} split is empty (no images)')
    missing = [] if listed else missing_files(files, folder, names)
    if missing:
        raise DatasetError(f'{missing[0]}: image file not found ({len(missing)} of {len(names)} images of the '
                           f'{files.split} split listed in {where} are missing)')
    if missing is not None and len(names) <= DECODE_LIMIT:
        for name in names:
            path = files.under(folder, name)
            check_image(path, files.read(path))


def check_coco(dataset: dict, files: Files, classes: Optional[tuple], source: str) -> None:
    """A COCO-style annotation file (COCO, LVIS) and its images."""
    path = files.path(dataset.get('ann_file', ''))
    text = files.text(path, 'annotation file')
    try:
        coco = json.loads(text)
    except ValueError as error:
        raise DatasetError(f'{path}: not a COCO annotation file (not JSON: {error})') from error
    lists = ('images', 'annotations', 'categories')
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in lists):
        keys = sorted(coco) if isinstance(coco, dict) else type(coco).__name__
        raise DatasetError(f'{path}: not a COCO annotation file: expected the lists "images", "annotations" and '
                           f'"categories", found {keys}')
    names = [c.get('name') for c in coco['categories']]
    if classes is not None and not set(classes) <= set(names):
        raise DatasetError(f'{path}: classes {sorted(set(classes) - set(names))[:20]} of {source} are not among the '
                           f'file\'s categories {names[:20]}: name the file\'s classes in the dataset\'s '
                           'metainfo=dict(classes=...)')
    image_dir = files.path((dataset.get('data_prefix') or {}).get('img', ''))
    names = [im.get('file_name') or str(im.get('coco_url', '')).replace(COCO_URL, '') for im in coco['images']]
    check_images(files, image_dir, names, path)


def check_seg_folder(dataset: dict, files: Files, defaults: Dict[str, Any]) -> None:
    """An mmseg dataset: its image folder listed recursively as mmseg lists it (or its ``ann_file``
    of names), and a label map beside every image."""
    prefix = dataset.get('data_prefix') or {}
    image_dir, seg_dir = files.path(prefix.get('img_path')), files.path(prefix.get('seg_map_path'))
    suffix = dataset.get('img_suffix', defaults.get('img_suffix', '.jpg'))
    seg_suffix = dataset.get('seg_map_suffix', defaults.get('seg_map_suffix', '.png'))
    for folder in (image_dir, seg_dir):
        if files.isdir(folder) is False:
            raise DatasetError(f'{folder}: folder of the {files.split} split not found')
    if dataset.get('ann_file'):
        ann_file = files.path(dataset['ann_file'])
        stems = [line.strip() for line in files.text(ann_file, 'image list').splitlines() if line.strip()]
        where = ann_file
    else:
        listed = files.list_files(image_dir, suffix=suffix, recursive=True)
        if listed is None:
            return
        stems, where = sorted(name[:-len(suffix)] for name in listed), image_dir
    check_images(files, image_dir, [stem + suffix for stem in stems], where, listed=not dataset.get('ann_file'))
    missing = missing_files(files, seg_dir, [stem + seg_suffix for stem in stems])
    if missing:
        raise DatasetError(f'{missing[0]}: label map not found ({len(missing)} of {len(stems)} in the '
                           f'{files.split} split)')


def check_image_list(dataset: dict, files: Files, num_classes: Optional[int]) -> None:
    """An mmpretrain ``CustomDataset``/``ImageNet`` with a list file (``path label`` per line):
    the file exists and is not empty, every label is an integer below the head's classes, and
    every image exists (and, in small splits, decodes). A class-folder layout is mmpretrain's to read."""
    ann_file = dataset.get('ann_file') or (f"meta/{dataset['split']}.txt" if dataset.get('split') else '')
    path = files.path(ann_file)
    if not ann_file or (not dataset.get('ann_file') and not files.isfile(path)):
        return
    prefix = dataset.get('data_prefix') or dataset.get('split') or ''
    image_dir = files.path(prefix.get('img_path', '') if isinstance(prefix, dict) else prefix)
    images = []
    for number, line in enumerate(files.text(path, 'image list').splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        label = fields[-1] if len(fields) > 1 else None
        if label is not None and not (label.isdigit() and (num_classes is None or int(label) < num_classes)):
            allowed = f'an integer in [0, {num_classes - 1}]' if num_classes else 'a non-negative integer'
            raise DatasetError(f'{path}:{number}: label {label!r} is invalid: expected {allowed} '
                               '(the head\'s num_classes)')
        name = ' '.join(fields[:-1]) if label is not None else fields[0]
        images.append(name)
    check_images(files, image_dir, images, path)


# ------------------------------------------------------------------------------- a config
def _datasets(cfg: Config, splits: Sequence[str]) -> Iterator[Tuple[str, dict]]:
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if loader and loader.get('dataset'):
            dataset = loader['dataset']
            while 'dataset' in dataset:  # RepeatDataset, ClassBalancedDataset, ...
                dataset = dataset['dataset']
            yield split, dataset


def classifying_heads(model: dict) -> List[Tuple[str, int]]:
    """(where, num_classes) of the heads of :data:`CLASSIFYING_HEADS` that declare a class count
    (not those of :data:`OWN_CLASS_HEADS`); none in an open-vocabulary detector (a model with a
    ``language_model``: GLIP, Grounding DINO), whose heads score text tokens."""
    if 'language_model' in model:
        return []
    found = []
    for path in CLASSIFYING_HEADS:
        node, where = model, 'model'
        for key in path.split('.'):
            node = node.get(key) if isinstance(node, dict) else None
            where += '.' + key
        for i, head in enumerate(node if isinstance(node, (list, tuple)) else [node]):
            if isinstance(head, dict) and isinstance(head.get('num_classes'), int) and \
                    str(head.get('type', '')).split('.')[-1] not in OWN_CLASS_HEADS:
                found.append((where + (f'[{i}]' if isinstance(node, (list, tuple)) else ''), head['num_classes']))
    return found


def dataset_class(kind: str, scope: Optional[str]) -> Optional[type]:
    """The dataset class ``kind`` (``scope.kind`` where it names no scope); None where it is not
    found."""
    from mmengine.registry import DATASETS
    try:
        return DATASETS.get(kind if '.' in kind or not scope else f'{scope}.{kind}')
    except (KeyError, ImportError):
        return None


def init_defaults(cls: Optional[type]) -> Dict[str, Any]:
    """The ``__init__`` defaults of ``cls`` (what a config leaves out); empty for None."""
    if cls is None:
        return {}
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def dataset_classes(dataset: dict, cls: Optional[type]) -> Tuple[Optional[tuple], Optional[tuple], str]:
    """(the dataset's classes, those its detection heads classify, where they come from): the
    config's ``metainfo``, else the class's own ``METAINFO`` (:data:`LABELS_FROM_CLASSES`); a
    panoptic dataset's heads classify its ``thing_classes``."""
    info, source = dict(dataset.get('metainfo') or {}), 'the config\'s metainfo'
    if 'classes' not in info and cls is not None and cls.__module__.split('.')[0] in LABELS_FROM_CLASSES and \
            getattr(cls, 'METAINFO', {}).get('classes'):
        info, source = {**cls.METAINFO, **info}, f'{cls.__name__} (its default)'
    if not info.get('classes'):
        return None, None, source
    classes = tuple(info['classes'])
    return classes, tuple(info.get('thing_classes') or classes), source


def check_class_count(split: str, dataset: dict, cls: Optional[type],
                      heads: List[Tuple[str, int]]) -> Tuple[Optional[tuple], Optional[tuple], str]:
    """The ``heads`` (:func:`classifying_heads`) classify as many classes as the dataset has;
    returns :func:`dataset_classes`."""
    classes, classified, source = dataset_classes(dataset, cls)
    wrong = [(where, n) for where, n in heads if classified is not None and n != len(classified)]
    if wrong:
        where, n = wrong[0]
        raise DatasetError(f'the {split} dataset has {len(classified)} classes {classified[:20]} (from {source}) '
                           f'but {where}.num_classes={n}: make them agree in the config')
    return classes, classified, source


def check_datasets(cfg: Config, splits: Sequence[str] = ('train', 'val', 'test'), log: Log = print) -> None:
    """Checks the datasets of ``cfg`` that a run reads (see the module docstring).

    Args:
        cfg (Config): The config.
        splits (sequence of str): Which of its ``{split}_dataloader`` datasets to check.
        log (callable): Where a check that a backend cannot do is reported as skipped.

    Raises:
        DatasetError: the first problem found, naming the file.
    """
    heads = classifying_heads(cfg.get('model', {}))
    for split, dataset in _datasets(cfg, splits):
        kind = str(dataset.get('type', ''))
        name = kind.split('.')[-1]
        cls = dataset_class(kind, cfg.get('default_scope'))
        classes, _, source = check_class_count(split, dataset, cls, heads)
        files = Files(dataset, split, log)
        prefix = dataset.get('data_prefix') or {}
        if 'ann_file' in dataset and ('Coco' in name or 'LVIS' in name):
            check_coco(dataset, files, classes, source)
        elif isinstance(prefix, dict) and 'img_path' in prefix and 'seg_map_path' in prefix:
            check_seg_folder(dataset, files, init_defaults(cls))
        elif name in ('CustomDataset', 'ImageNet'):
            check_image_list(dataset, files, min((n for _, n in heads), default=None))


def check_datasets_once(cfg: Config, splits: Sequence[str] = ('train', 'val', 'test'), log: Log = print) -> None:
    """:func:`check_datasets` on global rank 0 only; in a distributed run the other ranks wait for
    its outcome (one broadcast), whatever it is, so that none is left waiting for the process
    group's timeout. Rank 0 raises its own error; the other ranks raise a :class:`DatasetError`
    with rank 0's message where that was a :class:`DatasetError`, and ``the dataset check on rank
    0 failed: TYPE: MESSAGE`` where it was any other exception (a file that cannot be opened, a
    dangling symlink, no memory left).

    Args:
        cfg (Config): The config.
        splits (sequence of str): Which of its ``{split}_dataloader`` datasets to check.
        log (callable): Where a check that a backend cannot do is reported as skipped.

    Raises:
        DatasetError: the first problem found (on the other ranks: any error of rank 0's check).
        Exception: on rank 0, any other error of the check, as it was raised.
    """
    from mmengine.dist import broadcast_object_list, get_rank, get_world_size
    failure: Optional[Exception] = None
    verdict = [None]  # rank 0's error as the other ranks raise it
    if get_rank() == 0:
        try:
            check_datasets(cfg, splits, log)
        except DatasetError as error:
            failure, verdict = error, [str(error)]
        except Exception as error:
            failure, verdict = error, [f'the dataset check on rank 0 failed: {type(error).__name__}: {error}']
    if get_world_size() > 1:
        broadcast_object_list(verdict, src=0)
    if failure is not None:
        raise failure
    if verdict[0] is not None:
        raise DatasetError(verdict[0])
