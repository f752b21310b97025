"""The host libraries' own bundled tools (mmdet's, mmseg's and mmpretrain's tools/train.py,
test.py, get_flops.py, browse_dataset.py) work on our quickstart configs, run from a directory
outside the repository, with nothing of ours on the command line but the config.

Two of mmseg 1.2.2's tools fail in this stack for reasons of their own, whatever the config (its
own configs too): get_flops.py passes both ``input_shape`` and ``inputs`` to mmengine 0.10.7's
``get_model_complexity_info``, which takes one; browse_dataset.py hands its visualizer an image
of a memory layout that cv2 cannot draw the labels into. They run through ``SHIM``, which removes
exactly these two causes (and changes nothing once mmseg does) and then runs the tool as
``python TOOL ARGS`` does. mmpretrain's browse_dataset.py fails in every mode but ``original``
(its picture grid calls matplotlib's private ``adjust_bbox``, whose signature changed); that mode,
which reads the same dataset through the same pipeline, is used here.
"""
import importlib
import os.path as osp
import sys

import pytest
from PIL import Image

from convmlp_mm.data import generate, generate_classification

import tool_runner

pytestmark = pytest.mark.slow  # the host libraries' tools in subprocesses

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CASES = {  # library -> (config, short-run options, browse_dataset's place)
    'mmdet': ('configs/quickstart/mask-rcnn_convmlp-s_shapes.py',
              ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1'], 'analysis_tools/browse_dataset.py'),
    'mmseg': ('configs/quickstart/fpn_convmlp-s_shapes.py',
              ['train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2'],
              'analysis_tools/browse_dataset.py'),
    'mmpretrain': ('configs/quickstart/convmlp-s_shapes-cls.py',
                   ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1'], 'visualization/browse_dataset.py'),
}
NO_WORKERS = [f'{s}_dataloader.{k}' for s in ('train', 'val', 'test')
              for k in ('num_workers=0', 'persistent_workers=False')]
# What get_flops.py prints for the quickstart models: the ConvMLP-S backbone's 8,508,896 parameters
# (the published classifier's 9,022,920 less its norm and 1000-class head, 1,024 + 513,000) and the
# configs' other parts: Mask R-CNN (3 classes) 19,736,610, Semantic FPN (4 classes) 4,231,428, the
# classifier's norm and 3-class head 2,563.
PARAMS = {'mmdet': 'Params: 28.246M', 'mmseg': 'Params: 12.74M', 'mmpretrain': 'Params: 8.511M'}
# What browse_dataset.py draws: the 8 training images of the project's generated datasets, at the
# quickstart configs' sizes (width, height)
PICTURES = {'mmdet': ('train_{:05d}.jpg', (160, 128)), 'mmseg': ('train_{:05d}.jpg', (160, 128)),
            'mmpretrain': ('train_{:05d}.png', (64, 64))}
SHIM = '''"""python shim.py TOOL ARGS: runs TOOL as python TOOL ARGS does, without two causes of failure
of mmseg 1.2.2's tools (tests/test_host_tools.py)."""
import os.path as osp
import runpy
import sys

import mmengine.analysis
import numpy as np
from mmseg.visualization import SegLocalVisualizer

count = mmengine.analysis.get_model_complexity_info
add_datasample = SegLocalVisualizer.add_datasample


def get_model_complexity_info(model, input_shape=None, inputs=None, **kwargs):
    """get_flops.py gives both; mmengine counts with ``inputs`` alone."""
    return count(model, None if inputs is not None else input_shape, inputs, **kwargs)


def add_contiguous_datasample(self, name, image, *args, **kwargs):
    """browse_dataset.py gives a channel-reversed view; cv2 draws into a C-contiguous array."""
    return add_datasample(self, name, np.ascontiguousarray(image), *args, **kwargs)


mmengine.analysis.get_model_complexity_info = get_model_complexity_info
SegLocalVisualizer.add_datasample = add_contiguous_datasample
sys.argv = sys.argv[1:]
sys.path[0] = osp.dirname(sys.argv[0])
runpy.run_path(sys.argv[0], run_name='__main__')
'''


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    """A directory outside the repository with small copies of the generated datasets in data/
    (8 training and 4 validation images each), and SHIM as shim.py."""
    root = tmp_path_factory.mktemp('project')
    generate(str(root / 'data' / 'shapes'), 8, 4)
    generate_classification(str(root / 'data' / 'shapes_cls'), 8, 4)
    (root / 'shim.py').write_text(SHIM)
    return root


def tool(library, name):
    return osp.join(osp.dirname(importlib.import_module(library).__file__), '.mim', 'tools', name)


def run(cwd, *args):
    result = tool_runner.run([sys.executable, *args], cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def run_tool(project, library, name, *args):
    """The host's tool, through the shim for mmseg's."""
    return run(project, *([project / 'shim.py'] if library == 'mmseg' else []), tool(library, name), *args)


@pytest.mark.stack_independent('the host libraries\' own tools are the same versions on both stacks; our configs train '
                               'on torch 2.1 in test_tools')
@pytest.mark.parametrize('library', list(CASES))
def test_host_train_and_test_run_our_configs(library, project):
    config, short, _ = CASES[library]
    config = osp.join(ROOT, config)
    work = project / f'work_{library}'
    options = ['--cfg-options', *short, *NO_WORKERS]
    run(project, tool(library, 'train.py'), config, '--work-dir', str(work), *options)
    checkpoint = open(work / 'last_checkpoint').read().strip()
    out = run(project, tool(library, 'test.py'), config, checkpoint, '--work-dir', str(work),
              '--cfg-options', *NO_WORKERS)
    assert {'mmdet': 'coco/bbox_mAP', 'mmseg': 'mIoU', 'mmpretrain': 'accuracy/top1'}[library] in out


@pytest.mark.stack_independent('the host libraries\' own tools and mmengine\'s counting are the same versions on both '
                               'stacks')
@pytest.mark.parametrize('library', list(CASES))
def test_host_get_flops_counts_our_models(library, project):
    config = osp.join(ROOT, CASES[library][0])
    shape = {'mmdet': ['--num-images', '2', '--cfg-options', *NO_WORKERS], 'mmseg': ['--shape', '128', '160'],
             'mmpretrain': ['--shape', '64', '64']}[library]
    out = run_tool(project, library, 'analysis_tools/get_flops.py', config, *shape)
    assert [line for line in out.splitlines() if line.startswith('Params: ')] == [PARAMS[library]]
    flops = [line for line in out.splitlines() if line.startswith('Flops: ')]
    assert len(flops) == 1 and flops[0].endswith('G') and float(flops[0][len('Flops: '):-1]) > 0


@pytest.mark.stack_independent('the host libraries\' own tools are the same versions on both stacks')
@pytest.mark.parametrize('library', list(CASES))
def test_host_browse_dataset_draws_our_training_sets(library, project):
    config, _, browse = CASES[library]
    browse_dir = project / f'browse_{library}'
    mode = ['--phase', 'train', '--mode', 'original'] if library == 'mmpretrain' else []
    run_tool(project, library, browse, osp.join(ROOT, config), '--output-dir', str(browse_dir), '--not-show', *mode)
    name, size = PICTURES[library]
    assert sorted(p.name for p in browse_dir.iterdir()) == [name.format(i) for i in range(8)]
    assert {Image.open(p).size for p in browse_dir.iterdir()} == {size}
