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
