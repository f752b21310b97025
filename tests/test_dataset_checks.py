"""The dataset checks of tools/train.py and tools/test.py on the hosts' own configs and dataset
layouts (COCO, COCO panoptic, LVIS, ADE20K, Cityscapes, ImageNet, generated with a few images each
where the configs expect them): no false refusal, and a missing file is still found; files
through mmengine.fileio backends (one that lists, mmengine's HTTP one that cannot); the checks
once, on rank 0; the switches that turn them off."""
import http.server
import json
import os
import os.path as osp
import posixpath
import threading
from functools import partial

import pytest
import torch.multiprocessing as mp
from mmengine.config import Config
from mmengine.fileio import LocalBackend, register_backend
from mmengine.fileio.backends import registry_utils
from PIL import Image

from convmlp_mm import cli
from convmlp_mm.data import checks
from convmlp_mm.data.checks import DatasetError, check_datasets, classifying_heads

import tool_runner


def image(path, size=(40, 48), mode='RGB'):
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.new(mode, size, 90).save(path)


def coco_file(path, images, categories, name_key='file_name'):
    os.makedirs(osp.dirname(path), exist_ok=True)
    json.dump(dict(images=[{'id': i, name_key: name, 'width': 40, 'height': 48} for i, name in enumerate(images)],
                   annotations=[dict(id=i, image_id=i, category_id=1, bbox=[2, 2, 10, 10], area=100, iscrowd=0)
                                for i in range(len(images))],
                   categories=[dict(id=i + 1, name=name) for i, name in enumerate(categories)]), open(path, 'w'))


def make_coco(classes, panoptic=False):
    for split in ('train2017', 'val2017'):
        names = ['000000000009.jpg', '000000000025.jpg']
        for name in names:
            image(f'data/coco/{split}/{name}')
        kind = 'panoptic' if panoptic else 'instances'
        coco_file(f'data/coco/annotations/{kind}_{split}.json', names, classes)
    return 'data/coco/val2017/000000000025.jpg'


def make_lvis(classes):
    for split in ('train', 'val'):  # LVIS v1 names its images by their COCO URL
        urls = [f'http://images.cocodataset.org/{split}2017/00000000000{i}.jpg' for i in (1, 2)]
        for url in urls:
            image(url.replace('http://images.cocodataset.org/', 'data/lvis_v1/'))
        coco_file(f'data/lvis_v1/annotations/lvis_v1_{split}.json', urls, classes, name_key='coco_url')
    return 'data/lvis_v1/val2017/000000000002.jpg'


def make_ade(classes):
    root = 'data/ade/ADEChallengeData2016'
    for split, stem in (('training', 'ADE_train'), ('validation', 'ADE_val')):
        for i in (1, 2):
            image(f'{root}/images/{split}/{stem}_{i:08d}.jpg')
            image(f'{root}/annotations/{split}/{stem}_{i:08d}.png', mode='L')
    return f'{root}/annotations/validation/ADE_val_00000002.png'


def make_cityscapes(classes):
    for split, cities in (('train', ('aachen', 'bochum')), ('val', ('frankfurt', 'lindau'))):
        for city in cities:  # one sub-folder per city, as in the real dataset
            stem = f'{city}/{city}_000000_000019'
            image(f'data/cityscapes/leftImg8bit/{split}/{stem}_leftImg8bit.png')
            image(f'data/cityscapes/gtFine/{split}/{stem}_gtFine_labelTrainIds.png', mode='L')
    return 'data/cityscapes/gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png'


def make_imagenet(classes):
    train = ['n01440764/n01440764_10026.JPEG', 'n01443537/n01443537_10007.JPEG']
    val = ['ILSVRC2012_val_00000001.JPEG', 'ILSVRC2012_val_00000002.JPEG']
    for split, names in (('train', train), ('val', val)):
        for name in names:
            image(f'data/imagenet/{split}/{name}')
        os.makedirs('data/imagenet/meta', exist_ok=True)
        open(f'data/imagenet/meta/{split}.txt', 'w').write(''.join(f'{n} {i}\n' for i, n in enumerate(names)))
    return 'data/imagenet/val/ILSVRC2012_val_00000002.JPEG'


def host_config(name):
    """A host's config as its users inherit it (``_base_ = 'mmdet::...'``)."""
    return Config.fromstring(f'_base_ = {name!r}\n', '.py')


def build_dataset(cfg, dataset):
    """``dataset`` (without its pipeline) built by the host of ``cfg``."""
    from mmengine.registry import DATASETS, DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return DATASETS.build(dict(dataset, pipeline=[]))


def dataset_classes(scope, kind):
    from mmengine.registry import DATASETS
    return DATASETS.get(f'{scope}.{kind}').METAINFO['classes']


#: host config -> (its dataset class, the layout generator, whether the host's dataset class
#: reads the generated layout here: LVIS needs the lvis package, which the hosts do not install)
HOST_CONFIGS = {
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py': ('CocoDataset', make_coco, True),
    'mmdet::htc/htc_r50_fpn_1x_coco.py': ('CocoDataset', make_coco, True),  # semantic_head: 183 stuff classes
    'mmdet::rpn/rpn_r50_fpn_1x_coco.py': ('CocoDataset', make_coco, True),  # an RPN head: one class
    'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py': ('CocoPanopticDataset', partial(make_coco, panoptic=True),
                                                            False),
    'mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py': ('LVISV1Dataset', make_lvis, False),
    'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py': ('ADE20KDataset', make_ade, True),
    'mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py': ('CityscapesDataset', make_cityscapes, True),
    'mmpretrain::resnet/resnet50_8xb32_in1k.py': ('ImageNet', make_imagenet, True),
}


@pytest.fixture(params=list(HOST_CONFIGS))
def host_case(request, tmp_path, monkeypatch):
    """(config, a file the check must find missing): the host's config as it is, its data
    generated at its own data_root (relative to the working directory)."""
    monkeypatch.chdir(tmp_path)
    cfg = host_config(request.param)
    kind, make, readable = HOST_CONFIGS[request.param]
    return cfg, make(dataset_classes(cfg.default_scope, kind)), readable


def test_host_configs_pass_on_their_layouts_and_a_missing_file_is_found(host_case):
    cfg, removable, readable = host_case
    lines = []
    check_datasets(cfg, log=lines.append)
    assert lines == []
    if readable:  # the generated layout is the one the host reads
        assert len(build_dataset(cfg, cfg.val_dataloader.dataset)) == 2
    os.remove(removable)
    with pytest.raises(DatasetError, match=f'{removable}: (image file|label map) not found'):
        check_datasets(cfg)


def test_class_counts_compare_only_the_heads_that_classify_the_datasets_classes():
    htc = host_config('mmdet::htc/htc_r50_fpn_1x_coco.py')
    assert htc.model.roi_head.semantic_head.num_classes == 183
    assert [where for where, _ in classifying_heads(htc.model)] == [
        'model.roi_head.bbox_head[0]', 'model.roi_head.bbox_head[1]', 'model.roi_head.bbox_head[2]',
        'model.roi_head.mask_head[0]', 'model.roi_head.mask_head[1]', 'model.roi_head.mask_head[2]']
    cfg = host_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    cfg.train_dataloader.dataset.metainfo = dict(classes=('cat', 'dog'))
    with pytest.raises(DatasetError, match=r"the train dataset has 2 classes \('cat', 'dog'\) \(from the config's "
                                           r"metainfo\) but model.roi_head.bbox_head.num_classes=80"):
        check_datasets(cfg, splits=('train',))


@pytest.mark.parametrize('config', [
    'mmdet::mm_grounding_dino/coco/grounding_dino_swin-t_finetune_16xb4_1x_coco.py',  # 256 text tokens
    'mmdet::glip/lvis/glip_atss_swin-t_a_fpn_dyhead_pretrain_zeroshot_lvis.py',
    'mmseg::stdc/stdc1_4xb12-80k_cityscapes-512x1024.py',  # a 2-class boundary head
    'mmpretrain::efficientnet_v2/efficientnetv2-s_8xb32_in21k.py',  # ImageNet's type on ImageNet-21k lists
])
def test_heads_with_class_counts_of_their_own_pass(config):
    """Host configs that a class-count comparison without :data:`OWN_CLASS_HEADS`, the
    open-vocabulary rule and :data:`LABELS_FROM_CLASSES` refuses; a sweep of all 2,042 configs of
    mmdet 3.3.0, mmseg 1.2.2 and mmpretrain 1.2.0 finds no other."""
    cfg = host_config(config)
    heads = classifying_heads(cfg.model)
    for split, dataset in checks._datasets(cfg, ('train', 'val', 'test')):
        checks.check_class_count(split, dataset, checks.dataset_class(dataset.type, cfg.default_scope), heads)


def test_the_dataset_class_default_classes_must_be_in_the_annotation_file(tmp_path, monkeypatch):
    """A COCO-format file of one's own with the config's metainfo left out: mmdet would keep only
    the annotations of COCO's 80 class names."""
    monkeypatch.chdir(tmp_path)
    cfg = host_config('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    make_coco(['insulator', 'crack'])
    with pytest.raises(DatasetError, match=r"instances_train2017.json: classes \['airplane', .* of CocoDataset "
                                           r"\(its default\) are not among the file's categories "
                                           r"\['insulator', 'crack'\]"):
        check_datasets(cfg, splits=('train',))


# ------------------------------------------------------------------------------- file backends
class BucketBackend(LocalBackend):
    """An object store that lists (as s3 and petrel do), keyed ``bucket://KEY``, on a local
    folder; it counts its calls."""

    calls = []

    def __init__(self, store: str) -> None:
        self.store = store

    def local(self, path):
        assert str(path).startswith('bucket://'), path
        return osp.join(self.store, str(path)[len('bucket://'):])

    def join_path(self, path, *parts):
        return posixpath.join(path, *parts)


for _method in ('get', 'get_text', 'isfile', 'isdir', 'exists', 'list_dir_or_file'):
    def _call(self, path, *args, _method=_method, **kwargs):
        BucketBackend.calls.append(_method)
        return getattr(LocalBackend, _method)(self, self.local(path), *args, **kwargs)
    setattr(BucketBackend, _method, _call)


@pytest.fixture
def bucket_backend():
    register_backend('convmlp-test-bucket', BucketBackend, prefixes='bucket')
    BucketBackend.calls.clear()
    yield
    del registry_utils.backends['convmlp-test-bucket'], registry_utils.prefix_to_backends['bucket']


def test_a_remote_backend_that_lists_is_checked_through_it(tmp_path, monkeypatch, bucket_backend):
    monkeypatch.chdir(tmp_path)
    cfg = host_config('mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py')
    missing = make_cityscapes(None)
    for split in ('train', 'val'):
        dataset = cfg[f'{split}_dataloader'].dataset
        dataset.data_root = 'bucket://cityscapes/'
        dataset.backend_args = dict(backend='convmlp-test-bucket', store=str(tmp_path / 'data'))
    check_datasets(cfg, splits=('train', 'val'))
    # one recursive listing of each image folder, one listing of each city's label folder
    assert BucketBackend.calls.count('list_dir_or_file') == 2 + 4 and 'isfile' not in BucketBackend.calls
    os.remove(missing)
    with pytest.raises(DatasetError, match='bucket://cityscapes/gtFine/val/lindau/lindau_000000_000019_gtFine_'
                                           'labelTrainIds.png: label map not found'):
        check_datasets(cfg, splits=('val',))


@pytest.fixture
def http_root(tmp_path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


def test_a_dataset_over_http_is_checked_as_far_as_http_can_and_mmdet_reads_it(tmp_path, monkeypatch, http_root):
    """mmengine's HTTP backend reads but cannot list: the annotation file is checked, the image
    check is skipped with one line, and mmdet's dataset reads the same URLs."""
    monkeypatch.chdir(tmp_path)
    cfg = host_config('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    make_coco(dataset_classes('mmdet', 'CocoDataset'))
    dataset = cfg.val_dataloader.dataset
    dataset.update(data_root='', ann_file=f'{http_root}/data/coco/annotations/instances_val2017.json',
                   data_prefix=dict(img=f'{http_root}/data/coco/val2017/'))
    lines = []
    check_datasets(cfg, splits=('val',), log=lines.append)
    assert lines == [f'dataset check of the val split: HTTPBackend cannot test files ({dataset.ann_file}); that '
                     'check is skipped',
                     f'dataset check of the val split: HTTPBackend cannot test folders ({http_root}/data/coco/'
                     'val2017/); that check is skipped',
                     f'dataset check of the val split: HTTPBackend cannot list folders ({http_root}/data/coco/'
                     'val2017/); that check is skipped']
    assert build_dataset(cfg, dataset)[0]['img_path'] == f'{http_root}/data/coco/val2017/000000000009.jpg'
    dataset.ann_file = f'{http_root}/data/coco/annotations/instances_val2018.json'
    with pytest.raises(DatasetError, match='instances_val2018.json: annotation file of the val split cannot be '
                                           'read .*404'):
        check_datasets(cfg, splits=('val',), log=lines.append)


# ------------------------------------------------------------------------------- once, and off
def _check_on_rank(rank, port, config, results):
    import torch.distributed as dist

    from convmlp_mm.data import checks
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    calls = []
    checked = checks.check_datasets
    checks.check_datasets = lambda *args, **kwargs: calls.append(1) or checked(*args, **kwargs)
    try:
        checks.check_datasets_once(Config(config))
        results[rank] = (len(calls), None)
    except DatasetError as error:
        results[rank] = (len(calls), str(error))
    dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_the_checks_run_once_on_rank_0_and_every_rank_gets_its_verdict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = host_config('mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py')
    os.remove(make_ade(None))
    cfg.test_dataloader.dataset.data_root = str(tmp_path / 'data/ade/ADEChallengeData2016')
    config = dict(default_scope='mmseg', test_dataloader=cfg.test_dataloader.to_dict())
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_check_on_rank, args=(port, config, results), nprocs=2)
    message = (f'{tmp_path}/data/ade/ADEChallengeData2016/annotations/validation/ADE_val_00000002.png: label map not '
               'found')
    assert results[0][0] == 1 and results[1][0] == 0
    assert results[0][1] == results[1][1] and results[0][1].startswith(message)


def drop_file_permission_override() -> None:
    """Takes CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of this process's effective
    capabilities, so that a file's mode binds it even as root (nothing changes for other users)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # (effective, permitted, inheritable) of capabilities 0-31, then 32-63
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), 'capget failed')
    data[0] &= ~((1 << 1) | (1 << 2))
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), 'capset failed')


def _check_each_case_on_rank(rank, port, config, image, label, results):
    """The cases of :func:`test_every_outcome_of_rank_0s_check_reaches_every_rank` in turn (rank 0
    makes each one's files), under a 30 s process-group timeout: (error type, message, seconds in
    check_datasets_once) of each."""
    import datetime
    import time

    import torch.distributed as dist

    from convmlp_mm.data import checks
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=30))
    for case in ('pass', 'dataset error', 'dangling symlink', 'unreadable file'):
        if rank == 0 and case == 'dataset error':
            os.rename(label, label + '.away')
        if rank == 0 and case == 'dangling symlink':
            os.rename(label + '.away', label)
            os.rename(image, image + '.away')
            os.symlink(image + '.nowhere', image)
        if rank == 0 and case == 'unreadable file':
            os.remove(image)
            os.rename(image + '.away', image)
            os.chmod(image, 0)
            drop_file_permission_override()  # root reads any file otherwise
        start = time.monotonic()
        try:
            checks.check_datasets_once(Config(config))
            results[rank, case] = (None, None, time.monotonic() - start)
        except Exception as error:
            results[rank, case] = (type(error).__name__, str(error), time.monotonic() - start)
    dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_every_outcome_of_rank_0s_check_reaches_every_rank(tmp_path, monkeypatch):
    """2 gloo ranks: a dataset that passes, one without a label map (a DatasetError), and two that
    the check cannot read: an image that is a symlink to nothing (FileNotFoundError) and one with
    mode 000 (PermissionError; as root too, whose capabilities to read any file rank 0 drops).
    Rank 0 raises its own error, rank 1 a DatasetError naming it, both at once (not after the
    process group's 30 s timeout)."""
    monkeypatch.chdir(tmp_path)
    cfg = host_config('mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py')
    label = str(tmp_path / make_ade(None))
    root = tmp_path / 'data/ade/ADEChallengeData2016'
    cfg.test_dataloader.dataset.data_root = str(root)
    config = dict(default_scope='mmseg', test_dataloader=cfg.test_dataloader.to_dict())
    image = str(root / 'images/validation/ADE_val_00000001.jpg')
    results = mp.Manager().dict()
    mp.spawn(_check_each_case_on_rank, args=(tool_runner.free_port(), config, image, label, results), nprocs=2)
    assert results[0, 'pass'][:2] == results[1, 'pass'][:2] == (None, None)
    missing = ('DatasetError', f'{label}: label map not found (1 of 2 in the test split)')
    assert results[0, 'dataset error'][:2] == results[1, 'dataset error'][:2] == missing
    for case, error, message in (
            ('dangling symlink', 'FileNotFoundError', f"[Errno 2] No such file or directory: '{image}'"),
            ('unreadable file', 'PermissionError', f"[Errno 13] Permission denied: '{image}'")):
        assert results[0, case][:2] == (error, message)
        assert results[1, case][:2] == ('DatasetError', f'the dataset check on rank 0 failed: {error}: {message}')
    seconds = [results[rank, case][2] for rank, case in results.keys()]
    assert len(seconds) == 8 and max(seconds) < 10, dict(results)


def test_no_data_check_flag_and_config_key_turn_the_checks_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data at all
    cfg = host_config('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    with pytest.raises(DatasetError, match='instances_train2017.json: annotation file of the train split not found'):
        cli.check_data(cfg, ('train',))
    for parser, positional in ((cli.train_parser('train'), ['config.py']),
                               (cli.test_parser('test'), ['config.py', 'checkpoint.pth'])):
        args = parser.parse_args([*positional, '--no-data-check'])
        assert args.no_data_check
        cli.check_data(cfg, ('train',), enabled=not args.no_data_check)
    cfg.data_check = False
    cli.check_data(cfg, ('train',))


@pytest.mark.slow  # 118,287 files
def test_a_coco_sized_split_passes_and_its_one_missing_image_is_named(tmp_path):
    """tools/analysis/dataset_check_speed.py's split (its time: docs/benchmarks.md)."""
    from analysis.dataset_check_speed import coco_config, make_split
    make_split(str(tmp_path), 118287)
    cfg = coco_config(str(tmp_path))
    check_datasets(cfg, splits=('train',))
    os.remove(tmp_path / 'train2017/000000100000.jpg')
    with pytest.raises(DatasetError, match=r'train2017/000000100000.jpg: image file not found \(1 of 118287 images'):
        check_datasets(cfg, splits=('train',))
