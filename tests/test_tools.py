"""tools/train.py, tools/test.py and tools/dist_train.sh, run as users run them, on tiny data."""
import glob
import os
import os.path as osp
import sys

import pytest

from convmlp_mm.data import generate

import tool_runner

pytestmark = pytest.mark.slow  # the tools in subprocesses

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
QUICK = {  # quickstart config -> overrides that make it 2 iterations on the CPU
    'mask-rcnn_convmlp-s_shapes.py': ['train_cfg.max_epochs=1', 'train_dataloader.batch_size=2'],
    'retinanet_convmlp-s_shapes.py': ['train_cfg.max_epochs=1', 'train_dataloader.batch_size=2'],
    'fpn_convmlp-s_shapes.py': ['train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'train_dataloader.batch_size=2'],
}
TEST = {  # an untrained RetinaNet scores below 0.05: keep every box so that mAP is computed
    'retinanet_convmlp-s_shapes.py': ['model.test_cfg.score_thr=0.0'],
}
COMMON = ['train_dataloader.num_workers=0', 'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0',
          'train_dataloader.persistent_workers=False', 'val_dataloader.persistent_workers=False',
          'test_dataloader.persistent_workers=False']


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A directory with data/shapes (4 training, 2 validation images) to run the tools in."""
    cwd = tmp_path_factory.mktemp('run')
    generate(str(cwd / 'data/shapes'), num_train=4, num_val=2, size=(64, 80), seed=1)
    return cwd


def run(args, cwd, env=None):
    env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    proc = tool_runner.run(args, cwd, env)
    if proc.returncode != 0:
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if 'Error' in line or 'error:' in line]
        pytest.fail(f'{" ".join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-4000:]}\n'
                    'lines naming errors:\n' + '\n'.join(errors[-40:]))
    return proc.stdout + proc.stderr


@pytest.mark.parametrize('config', [
    pytest.param(name, marks=[] if name.startswith('mask-rcnn') else pytest.mark.stack_independent(
        'config plumbing of mmdet/mmseg, the same on both stacks; Mask R-CNN (mmcv ops built for each torch) '
        'runs on both'))
    for name in QUICK])
def test_train_then_test(workspace, config):
    path = osp.join(ROOT, 'configs/quickstart', config)
    work_dir = workspace / f'work_{config}'
    run([sys.executable, osp.join(ROOT, 'tools/train.py'), path, '--work-dir', str(work_dir),
         '--cfg-options', *QUICK[config], *COMMON], workspace)
    (checkpoint, ) = glob.glob(str(work_dir / '*_[12].pth'))
    out = run([sys.executable, osp.join(ROOT, 'tools/test.py'), path, checkpoint, '--work-dir', str(work_dir),
               '--cfg-options', *TEST.get(config, []), *COMMON], workspace)
    assert ('mIoU' in out) if config.startswith('fpn') else ('bbox_mAP' in out)
    # --amp: bfloat16 autocast on the prepared (fused, channels-last) model, metrics reported too
    out = run([sys.executable, osp.join(ROOT, 'tools/test.py'), path, checkpoint, '--work-dir', str(work_dir), '--amp',
               '--cfg-options', *TEST.get(config, []), *COMMON], workspace)
    assert ('mIoU' in out) if config.startswith('fpn') else ('bbox_mAP' in out)
    image = str(workspace / ('data/shapes/ade/images/validation/val_00000.jpg' if config.startswith('fpn')
                             else 'data/shapes/coco/val/val_00001.jpg'))
    out = run([sys.executable, osp.join(ROOT, 'tools/infer.py'), path, checkpoint, image,
               '--out-dir', str(work_dir / 'pictures')], workspace)
    picture = str(work_dir / 'pictures' / osp.basename(image).replace('.jpg', '.png'))
    assert picture in out.splitlines() and osp.getsize(picture) > 1000
    out = run([sys.executable, osp.join(ROOT, 'tools/infer.py'), path, checkpoint, image, '--amp',
               '--out-dir', str(work_dir / 'pictures-amp')], workspace)
    assert picture.replace('pictures', 'pictures-amp') in out.splitlines()


def test_visualize_features_of_an_untrained_model(workspace):
    out_file = workspace / 'features.png'
    run([sys.executable, osp.join(ROOT, 'tools/visualize_features.py'),
         osp.join(ROOT, 'configs/quickstart/mask-rcnn_convmlp-s_shapes.py'),
         str(workspace / 'data/shapes/coco/val/val_00000.jpg'), '--out', str(out_file), '--channels', '3'], workspace)
    from PIL import Image
    width, height = Image.open(out_file).size
    assert (width, height) == (1000, 800)  # image, mean and 3 channels of 2 inches; 4 rows; 100 dpi


def test_dist_train_two_cpu_processes(workspace):
    path = osp.join(ROOT, 'configs/quickstart/fpn_convmlp-s_shapes.py')
    work_dir = workspace / 'work_dist'
    env = dict(PORT=str(tool_runner.free_port()), VIRTUAL_ENV=sys.prefix)  # this suite's environment
    out = run(['bash', osp.join(ROOT, 'tools/dist_train.sh'), path, '2', '--work-dir', str(work_dir),
               '--cfg-options', *QUICK['fpn_convmlp-s_shapes.py'], *COMMON], workspace, env=env)
    assert 'Distributed training: True' in out or 'world_size' in out.lower()
    assert [osp.basename(p) for p in glob.glob(str(work_dir / '*.pth'))] == ['iter_2.pth']


COMPARED = {  # run -> overrides: one training iteration of each system, evaluated at its end
    'retinanet_convmlp-s_shapes': ['train_cfg.max_epochs=1', 'model.test_cfg.score_thr=0.0'],
    'retinanet_r18_shapes': ['train_cfg.max_epochs=1', 'model.test_cfg.score_thr=0.0',
                             'model.backbone.frozen_stages=1'],
    'mask-rcnn_puremlp-s_shapes': ['train_cfg.max_epochs=1', 'model.test_cfg.rcnn.score_thr=0.0'],
    'fpn_r18_shapes': ['train_cfg.max_iters=1', 'train_cfg.val_interval=1'],
}
# tools/test.py of the Semantic FPN run on its training images, into the same work dir: the newest
# evaluation, which the table must show instead of the training's
ON_TRAINING_IMAGES = ['test_dataloader.dataset.data_prefix.img_path=images/training',
                      'test_dataloader.dataset.data_prefix.seg_map_path=annotations/training']


def test_compare_backbones_reads_what_the_hosts_logged(workspace):
    import csv
    import re

    from mmengine.config import Config

    from convmlp_mm.mm import build_host_model
    logged = {}
    for name, overrides in COMPARED.items():
        out = run([sys.executable, osp.join(ROOT, 'tools/train.py'), osp.join(ROOT, f'configs/quickstart/{name}.py'),
                   '--work-dir', str(workspace / 'compare' / name), '--cfg-options', 'train_dataloader.batch_size=4',
                   *overrides, *COMMON], workspace)
        # the evaluators' own log line, e.g. "coco/bbox_mAP: 0.0010  coco/bbox_mAP_50: ..." or "mIoU: 3.2100"
        logged[name] = {key: float(value) for key, value in re.findall(r'(coco/\w+|mIoU): (-?[\d.]+)', out)}
    fpn = workspace / 'compare' / 'fpn_r18_shapes'
    out = run([sys.executable, osp.join(ROOT, 'tools/test.py'), osp.join(ROOT, 'configs/quickstart/fpn_r18_shapes.py'),
               str(fpn / 'iter_1.pth'), '--work-dir', str(fpn), '--cfg-options', *ON_TRAINING_IMAGES, *COMMON],
              workspace)
    tested = float(re.findall(r'mIoU: ([\d.]+)', out)[-1])
    assert tested != logged['fpn_r18_shapes']['mIoU']  # else the next assertions could not tell them apart
    logged['fpn_r18_shapes']['mIoU'] = tested
    tool = osp.join(ROOT, 'tools/analysis/compare_backbones.py')
    dirs = [str(workspace / 'compare' / name) for name in COMPARED]
    out = run([sys.executable, tool, *dirs, '--out-dir', str(workspace / 'table'), '--input-size', '64', '80'],
              workspace)

    with open(workspace / 'table/compare.csv') as f:
        rows = list(csv.DictReader(f))
    assert [(row['system'], row['backbone']) for row in rows] == [
        ('RetinaNet', 'ConvMLP-S'), ('RetinaNet', 'ResNet-18'), ('Mask R-CNN', 'Pure-MLP-S'),
        ('Semantic FPN', 'ResNet-18')]
    for name, row in zip(COMPARED, rows):
        if name.startswith('fpn'):
            assert float(row['mIoU']) == pytest.approx(logged[name]['mIoU'], abs=0.006)
        else:
            ap = 'AP^b' if name.startswith('mask') else 'AP'
            assert float(row[ap]) == pytest.approx(100 * logged[name]['coco/bbox_mAP'], abs=0.06)
            if name.startswith('mask'):
                assert float(row['AP^m']) == pytest.approx(100 * logged[name]['coco/segm_mAP'], abs=0.06)
            else:  # no large objects in 64x80 images: pycocotools' -1, no value
                assert logged[name]['coco/bbox_mAP_l'] == -1 and row['APl'] == ''
        # parameters as the host builds the model of the config the run recorded
        cfg = Config.fromfile(osp.join(ROOT, f'configs/quickstart/{name}.py'))
        if 'model.backbone.frozen_stages=1' in COMPARED[name]:
            cfg.model.backbone.frozen_stages = 1
        model, _ = build_host_model(cfg, name)
        model.train()
        assert float(row['params_M']) == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6, abs=1e-3)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
        assert float(row['trainable_M']) == pytest.approx(trainable, abs=1e-3)
    assert float(rows[1]['trainable_M']) < float(rows[1]['params_M'])  # ResNet-18's stem and first stage frozen
    assert [line for line in out.splitlines() if line.startswith('### ')] == [
        '### RetinaNet', '### Mask R-CNN', '### Semantic FPN']
    with open(workspace / 'table/compare.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'

    # runs that have not evaluated: an error naming each and what it lacks, nothing written
    unevaluated = workspace / 'compare' / 'unevaluated'
    run([sys.executable, osp.join(ROOT, 'tools/train.py'), osp.join(ROOT, 'configs/quickstart/retinanet_r18_shapes.py'),
         '--work-dir', str(unevaluated), '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=2',
         'train_dataloader.batch_size=4', *COMMON], workspace)
    proc = tool_runner.run([sys.executable, tool, dirs[0], str(unevaluated), str(workspace / 'nowhere'),
                            '--out-dir', str(workspace / 'none'), '--input-size', '64', '80'],
                           workspace, dict(os.environ))
    assert proc.returncode == 1
    assert f'{unevaluated}: RetinaNet needs the metrics coco/bbox_mAP' in proc.stderr
    assert 'found no COCO or mIoU evaluation' in proc.stderr
    assert f'{workspace / "nowhere"}: not a directory' in proc.stderr and not osp.exists(workspace / 'none')
