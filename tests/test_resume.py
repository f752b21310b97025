"""Resuming with another data loader (tools/train.py, ResumableEpochBasedTrainLoop): an
epoch-boundary checkpoint skips nothing, a mid-epoch one restarts its epoch with one warning when
the loader differs (batch size, world size) and skips exactly the trained batches when it is the
same. Never a StopIteration. A run without a configured seed resumes with its checkpoint's."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

from convmlp_mm.data import generate_classification

import tool_runner

pytestmark = pytest.mark.slow  # trainings through tools/train.py

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(ROOT, 'tools/train.py')
CLS = osp.join(ROOT, 'configs/quickstart/convmlp-s_shapes-cls.py')
LOOP_BOOKKEEPING = pytest.mark.stack_independent(
    'loop bookkeeping in mmengine, the same on both stacks; the 2-process case runs on torch 2.1')
QUIET = ['train_cfg.val_interval=100', 'default_hooks.logger.interval=1', 'randomness.seed=3',
         'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
         'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
         'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    cwd = tmp_path_factory.mktemp('resume')
    generate_classification(str(cwd / 'data/shapes_cls'), 8, 2, seed=4)  # 8 training images
    return cwd


def train(cwd, work, *options, resume=None, nproc=1, new_interpreter=False):
    """``tools/train.py`` (``nproc`` > 1: ``tools/dist_train.sh``) in a fork of the tools' zygote, or
    with ``new_interpreter`` in a new process (the forks draw the same random numbers: an unset
    seed is the same in all of them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
    env.update(PYTHONUNBUFFERED='1', VIRTUAL_ENV=sys.prefix, PORT=str(tool_runner.free_port()))
    command = ([osp.join(ROOT, 'tools/dist_train.sh'), CLS, str(nproc)] if nproc > 1 else [sys.executable, TRAIN, CLS])
    command += ['--work-dir', str(work), '--cfg-options', *QUIET, *options]
    if resume:
        command += ['--resume', str(resume)]
    if new_interpreter:
        proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    else:
        proc = tool_runner.run(command, cwd, env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'StopIteration' not in out
    return out


def meta(path):
    return torch.load(path, map_location='cpu', weights_only=False)['meta']


@LOOP_BOOKKEEPING
def test_epoch_boundary_checkpoint_resumes_with_a_larger_batch(data):
    """2 epochs at batch 1 (8 iterations each), then --resume at batch 4 to 4 epochs."""
    work = data / 'batch-1-to-4'
    out = train(data, work, 'train_dataloader.batch_size=1', 'train_cfg.max_epochs=2',
                'default_hooks.checkpoint.interval=2')
    assert 'convmlp_mm runtime parts: SafeCheckpointLoadHook, ResumableEpochBasedTrainLoop, AtomicLocalBackend' in out
    out = train(data, work, 'train_dataloader.batch_size=4', 'train_cfg.max_epochs=4',
                'default_hooks.checkpoint.interval=2', resume=work / 'epoch_2.pth')
    assert 'skipping' not in out and 'restarts' not in out
    assert meta(work / 'epoch_4.pth')['epoch'] == 4 and meta(work / 'epoch_4.pth')['iter'] == 16 + 2 * 2


@LOOP_BOOKKEEPING
def test_mid_epoch_checkpoint_restarts_its_epoch_when_the_batch_size_changed(data):
    """Batch 4 (2 iterations an epoch), a checkpoint after iteration 3 (in epoch 2); resumed at
    batch 1 the epoch restarts with one warning; at batch 4 it skips the one trained batch."""
    work = data / 'batch-4-to-1'
    train(data, work, 'train_dataloader.batch_size=4', 'train_cfg.max_epochs=2',
          'default_hooks.checkpoint.by_epoch=False', 'default_hooks.checkpoint.interval=3')
    assert meta(work / 'iter_3.pth')['epoch'] == 1
    smaller = data / 'batch-4-to-1-resumed'
    out = train(data, smaller, 'train_dataloader.batch_size=1', 'train_cfg.max_epochs=2', resume=work / 'iter_3.pth')
    warnings = [line for line in out.splitlines() if 'restarts from its first batch' in line]
    assert len(warnings) == 1 and 'batch 1 of epoch 2' in warnings[0]
    assert 'length 2 -> 8' in warnings[0] and 'batch_size 4 -> 1' in warnings[0]
    assert meta(smaller / 'epoch_2.pth')['epoch'] == 2
    same = data / 'batch-4-to-4-resumed'
    out = train(data, same, 'train_dataloader.batch_size=4', 'train_cfg.max_epochs=2', resume=work / 'iter_3.pth')
    assert 'resumed in the middle of epoch 2: skipping its 1 trained batches' in out and 'restarts' not in out
    assert meta(same / 'epoch_2.pth')['iter'] == 4


@pytest.mark.stack_independent('the seed a resumed loader is built with is mmengine\'s and ours, the same on both '
                               'stacks; the bit-identical resume on torch 2.1 is test_cluster\'s SIGTERM case')
def test_mid_epoch_checkpoint_of_a_run_without_a_seed_resumes_bit_identical(data):
    """No configured seed (mmdet's bases set none: each run draws one), batch 4 (2 iterations an
    epoch), a checkpoint after iteration 3: resumed in a new interpreter, which draws another seed,
    the run shuffles epoch 2 as the interrupted one did and ends with its weights."""
    options = ['randomness.seed=None', 'train_dataloader.batch_size=4', 'train_cfg.max_epochs=2',
               'default_hooks.checkpoint.by_epoch=False', 'default_hooks.checkpoint.interval=3']
    work, resumed = data / 'no-seed', data / 'no-seed-resumed'
    train(data, work, *options)
    out = train(data, resumed, *options, resume=work / 'iter_3.pth', new_interpreter=True)
    assert int(re.search(r'\n\s+seed: (\d+)\n', out).group(1)) != meta(work / 'iter_3.pth')['seed']  # its own
    assert 'resumed in the middle of epoch 2: skipping its 1 trained batches' in out
    weights = torch.load(resumed / 'iter_4.pth', map_location='cpu', weights_only=False)['state_dict']
    reference = torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=False)['state_dict']
    different = [k for k in weights if not torch.equal(weights[k], reference[k])]
    assert weights.keys() == reference.keys() and not different, f'{len(different)} tensors differ: {different[:3]}'


def test_a_two_process_checkpoint_resumes_in_one_process(data):
    """2 CPU processes (gloo), batch 2 each: 2 iterations an epoch; a checkpoint after iteration 3,
    resumed by one process (4 iterations an epoch): that epoch restarts, named as such."""
    work = data / 'two-to-one'
    out = train(data, work, 'train_dataloader.batch_size=2', 'train_cfg.max_epochs=2',
                'default_hooks.checkpoint.by_epoch=False', 'default_hooks.checkpoint.interval=3', nproc=2)
    assert 'CPUDistributedDataParallel' in out and 'init_cpu_process_group' in out
    single = data / 'two-to-one-resumed'
    out = train(data, single, 'train_dataloader.batch_size=2', 'train_cfg.max_epochs=2', resume=work / 'iter_3.pth')
    warnings = [line for line in out.splitlines() if 'restarts from its first batch' in line]
    assert len(warnings) == 1 and 'world_size 2 -> 1' in warnings[0] and 'length 2 -> 4' in warnings[0]
    assert meta(single / 'epoch_2.pth')['epoch'] == 2
