"""StallWatchdogHook stops a stalled run but never a healthy one: a first training iteration or
test batch slower than its timeout (as torch.compile's) and checkpoint writes slower than it (on
rank 0, and on the ranks waiting for rank 0: the run's CheckpointHook after iterations, epochs
and validations, PreemptionHook) do not count; a training iteration that hangs after the first
still stops the run with its stacks and exit code 124. Timeouts of 1 s."""
import collections
import os
import signal
import sys
import textwrap
import time

import pytest
import torch
import torch.multiprocessing as mp
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel

import tool_runner
from toy import ToyDataset, experiment_name

pytestmark = pytest.mark.slow  # runs that the watchdog would end: each in a process of its own

TESTS = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 1.0
SLOW = 1.5  # seconds of each slow part: longer than TIMEOUT


class Model(BaseModel):
    """A linear model whose call number ``n`` in ``mode`` sleeps ``sleeps[mode, n]`` seconds."""

    def __init__(self, sleeps=None):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)
        self.sleeps = dict(sleeps or {})
        self.calls = collections.Counter()

    def forward(self, inputs, labels=None, mode='loss'):
        time.sleep(self.sleeps.get((mode, self.calls[mode]), 0))
        self.calls[mode] += 1
        out = self.linear(torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=(out.squeeze(-1) - torch.stack(labels)).square().mean())
        return [dict(pred=o, label=y) for o, y in zip(out, labels)]


class Validations(BaseMetric):
    """The number of validations so far: better at each one, so each saves a best checkpoint."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def process(self, data_batch, data_samples):
        self.results.append(len(data_samples))

    def compute_metrics(self, results):
        self.count += 1
        return dict(validations=self.count)


class Stop(Hook):
    """Tells rank 0's PreemptionHook that a SIGTERM came, before training iteration ``iteration``."""

    def __init__(self, iteration):
        self.iteration = iteration

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        from convmlp_mm.engine import PreemptionHook
        if runner.rank == 0 and runner.iter + 1 == self.iteration:
            next(h for h in runner.hooks if isinstance(h, PreemptionHook)).received = signal.SIGTERM


def slow_writes(seconds):
    """``backend_args`` of a local file backend whose writes take ``seconds`` (a slow disk)."""
    from mmengine.fileio import LocalBackend, register_backend

    class SlowBackend(LocalBackend):
        def put(self, obj, filepath):
            time.sleep(seconds)
            super().put(obj, filepath)

    register_backend('convmlp-test-slow', SlowBackend, force=True)
    return dict(backend='convmlp-test-slow')


def watched_runner(work_dir, model, train_cfg, checkpoint=None, hooks=(), **kwargs):
    """A Runner of ``model`` on the toy dataset (8 samples, batches of 2) with
    ``StallWatchdogHook(timeout=TIMEOUT)``, validation and a test loop; an iteration-based run
    samples without end (mmengine's loop sleeps 2 s where a pass over the data ends)."""
    from mmengine.runner import Runner
    loader = dict(dataset=ToyDataset(), sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2,
                  collate_fn=dict(type='pseudo_collate'))
    sampler = 'DefaultSampler' if train_cfg.get('by_epoch', True) else 'InfiniteSampler'
    return Runner(model=model, experiment_name=experiment_name(), work_dir=str(work_dir), default_scope='mmengine',
                  train_dataloader=dict(loader, sampler=dict(type=sampler, shuffle=False)), train_cfg=train_cfg,
                  optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                  val_dataloader=loader, val_cfg=dict(), val_evaluator=[Validations()],
                  test_dataloader=loader, test_cfg=dict(), test_evaluator=[Validations()],
                  default_hooks=dict(checkpoint=checkpoint),
                  custom_hooks=[dict(type='StallWatchdogHook', timeout=TIMEOUT, exit_delay=0), *hooks], **kwargs)


# ------------------------------------------------------------------------------- one process
SCRIPT = textwrap.dedent('''
    import sys
    sys.path.insert(0, {tests!r})
    import convmlp_mm
    from test_stall_watchdog import SLOW, Model, watched_runner

    model = Model({{('loss', 0): SLOW, ('loss', {stall}): 3600}})
    runner = watched_runner({work!r}, model, dict(by_epoch=True, max_epochs=2, val_interval=1))
    runner.train()
    print('trained', flush=True)
    model.sleeps[('predict', model.calls['predict'])] = SLOW  # the first test batch
    runner.test()
    print('tested', flush=True)
''')


def run_script(tmp_path, stall):
    script = tmp_path / 'run.py'
    script.write_text(SCRIPT.format(tests=TESTS, work=str(tmp_path / 'work'), stall=stall))
    start = time.monotonic()
    proc = tool_runner.run([sys.executable, str(script)], tmp_path, timeout=120)
    return proc, proc.stdout + proc.stderr, time.monotonic() - start


def test_a_first_training_iteration_and_test_batch_slower_than_the_timeout_are_not_stopped(tmp_path):
    """The first training iteration and the first test batch take 1.5 s (as compiling does), the
    timeout is 1 s."""
    proc, out, _ = run_script(tmp_path, stall=-1)
    assert proc.returncode == 0, out[-3000:]
    assert 'trained' in out and 'tested' in out and 'made no progress' not in out


def test_a_training_iteration_that_hangs_after_the_first_stops_the_run_with_its_stacks(tmp_path):
    """A slow first iteration (1.5 s), then the fourth hangs: the run stops 1 s later, with code
    124 and the stack of the hanging forward."""
    proc, out, seconds = run_script(tmp_path, stall=3)
    assert proc.returncode == 124, out[-3000:]
    assert 'StallWatchdogHook: rank 0 of 1' in out and 'made no progress for 1 s; last progress: training ' \
        'iteration 3' in out, out[-3000:]
    assert 'test_stall_watchdog.py' in out and 'in forward' in out and 'trained' not in out
    assert seconds < 60, seconds


# ------------------------------------------------------------------------------- two ranks
def _train_on_rank(rank, port, work_dir, by_epoch, results):
    import datetime

    import torch.distributed as dist

    import convmlp_mm  # noqa: F401 (the hooks)
    from convmlp_mm.engine import Preempted
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2')
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=30))
    backend_args = slow_writes(SLOW)
    if by_epoch:  # a checkpoint after each epoch; after epochs 2 and 3, validation and a best checkpoint
        train_cfg = dict(by_epoch=True, max_epochs=3, val_interval=2)
        checkpoint = dict(type='CheckpointHook', interval=1, save_best='validations', rule='greater',
                          backend_args=backend_args)
        hooks = []
    else:  # a checkpoint after iterations 2 and 4, a preemption's after 5
        train_cfg = dict(by_epoch=False, max_iters=8, val_interval=100)
        checkpoint = dict(type='CheckpointHook', interval=2, by_epoch=False, backend_args=backend_args)
        hooks = [dict(type='PreemptionHook', requeue=False), Stop(iteration=5)]
    runner = watched_runner(work_dir, Model(), train_cfg, checkpoint, hooks, launcher='pytorch',
                            cfg=dict(model_wrapper_cfg=dict(type='CPUDistributedDataParallel')))
    try:
        runner.train()
        results[rank] = 'trained'
    except Preempted as stop:
        results[rank] = f'preempted after {stop.checkpoint}'
    dist.destroy_process_group()


@pytest.mark.parametrize('by_epoch', [True, False], ids=['epochs-validation-best', 'iterations-preemption'])
def test_checkpoint_writes_slower_than_the_timeout_stop_no_rank(tmp_path, by_epoch):
    """2 gloo ranks; each checkpoint write takes 1.5 s, the timeout is 1 s. mmengine writes on
    rank 0 alone: rank 1 would wait for it in its next collective (or PreemptionHook's barrier).
    Epochs: a checkpoint after each of 3 epochs, after epochs 2 and 3 a validation and its best
    checkpoint. Iterations: checkpoints after iterations 2 and 4, and PreemptionHook's after 5."""
    results = mp.Manager().dict()
    mp.spawn(_train_on_rank, args=(tool_runner.free_port(), str(tmp_path), by_epoch, results), nprocs=2)
    saved = sorted(name for name in os.listdir(tmp_path) if name.endswith('.pth'))
    if by_epoch:
        assert dict(results) == {0: 'trained', 1: 'trained'}
        assert saved == ['best_validations_epoch_3.pth', 'epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth']
    else:
        assert dict(results) == {rank: f'preempted after {tmp_path}/iter_5.pth' for rank in (0, 1)}
        assert saved == ['iter_2.pth', 'iter_4.pth', 'iter_5.pth']
