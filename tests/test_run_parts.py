"""The runtime parts at the scale and in the processes users run them: one small collective per
iteration in all of them together, FiniteLossHook's skip under gradient accumulation, workers
seeded per epoch (persistent or not), the resume fallback, and nothing left installed by a run
that raises."""
import os
import os.path as osp
import signal
import socket
import sys
import textwrap

import pytest
import torch
import torch.multiprocessing as mp
from mmengine.hooks import Hook
from mmengine.runner import Runner

from convmlp_mm.cli import find_resume_checkpoint
from convmlp_mm.engine import EpochSeededDataset, FiniteLossHook

import tool_runner
from toy import experiment_name

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


class Toy(torch.nn.Module):
    pass


def toy_runner(work_dir, model=None, hooks=(), dataset=None, epochs=1, **kwargs):
    from mmengine.model import BaseModel

    class Model(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1)

        def forward(self, inputs, data_samples=None, mode='loss'):
            return dict(loss=self.fc(torch.stack(inputs)).square().mean())

    dataset = dataset or [dict(inputs=torch.ones(2), data_samples=None)] * 4
    cfg = dict(model=model or Model(), experiment_name=experiment_name(), work_dir=str(work_dir),
               train_dataloader=dict(dataset=dataset, sampler=dict(type='DefaultSampler', shuffle=False),
                                     batch_size=1, collate_fn=dict(type='pseudo_collate')),
               optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
               train_cfg=dict(type='ResumableEpochBasedTrainLoop', max_epochs=epochs),
               custom_hooks=list(hooks), default_hooks=dict(checkpoint=None), default_scope='mmengine')
    cfg.update(kwargs)
    return Runner(**cfg)


# ------------------------------------------------------------------------------- FiniteLossHook
def test_a_skipped_loss_under_accumulation_counts_and_the_window_steps_after_it(tmp_path):
    """accumulative_counts=2 over 4 iterations, the loss of iteration 3 NaN: iteration 3 counts
    (the window of 3-4 steps once, at 4, with iteration 4's gradients alone), and the window of
    1-2 steps with both."""
    from mmengine.model import BaseModel

    class Recorder(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1, bias=False)
            torch.nn.init.ones_(self.fc.weight)
            self.calls = 0

        def forward(self, inputs, data_samples=None, mode='loss'):
            self.calls += 1
            loss = self.fc(torch.stack(inputs)).sum() * self.calls
            return dict(loss=loss * float('nan') if self.calls == 3 else loss)

    steps = []

    class RecordSteps(Hook):
        def before_train(self, runner):
            weight, optimizer = runner.model.fc.weight, runner.optim_wrapper.optimizer
            step = optimizer.step

            def recorded_step(*args, **kwargs):
                steps.append(weight.grad.clone())
                return step(*args, **kwargs)
            optimizer.step = recorded_step

    runner = toy_runner(tmp_path, Recorder(), hooks=[dict(type='FiniteLossHook', action='skip')],
                        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1.0), accumulative_counts=2))
    runner.register_hook(RecordSteps())
    runner.train()
    # d(loss_i)/dw = i * [1, 1], each scaled by 1/2 (accumulation): window 1 = (1 + 2) / 2, window 2 = 4 / 2
    assert [g.tolist() for g in steps] == [[[1.5, 1.5]], [[2.0, 2.0]]]
    assert runner.optim_wrapper._inner_count == 4
    (hook, ) = [h for h in runner.hooks if isinstance(h, FiniteLossHook)]
    assert hook.skipped == 1 and 'update_params' not in vars(runner.optim_wrapper)  # unwrapped after training


def test_finite_loss_hook_wraps_once(tmp_path):
    runner = toy_runner(tmp_path, hooks=[dict(type='FiniteLossHook')])
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    (hook, ) = [h for h in runner.hooks if isinstance(h, FiniteLossHook)]
    hook.before_train(runner)
    wrapped = runner.optim_wrapper.update_params
    hook.before_train(runner)
    assert runner.optim_wrapper.update_params is wrapped
    hook.after_train(runner)
    assert runner.optim_wrapper.update_params.__func__ is type(runner.optim_wrapper).update_params


# ------------------------------------------------------------------------------- collectives
class Marks(Hook):
    """Where the collectives count stands at the first and last hook of each iteration."""

    def __init__(self, calls, marks):
        self.calls, self.marks = calls, marks

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.marks.append(len(self.calls))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.marks.append(len(self.calls))


def _count_collectives(rank, port, work_dir, results):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port))
    import torch.distributed as dist

    from convmlp_mm.engine import init_cpu_process_group
    init_cpu_process_group('pytorch')
    calls = []
    for name in ('all_reduce', 'all_gather', 'all_gather_object', 'broadcast', 'broadcast_object_list', 'barrier'):
        def counted(*args, _function=getattr(dist, name), _name=name, **kwargs):
            calls.append(_name)
            return _function(*args, **kwargs)
        setattr(dist, name, counted)
    runner = toy_runner(
        work_dir, hooks=[dict(type='RandomStateHook'), dict(type='FiniteLossHook'), dict(type='PreemptionHook'),
                         dict(type='StallWatchdogHook', timeout=600)],
        train_cfg=dict(type='ResumableEpochBasedTrainLoop', max_epochs=2), launcher='pytorch',
        cfg=dict(model_wrapper_cfg=dict(type='CPUDistributedDataParallel')),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)))
    before, after = [], []
    runner.register_hook(Marks(calls, before), priority='HIGHEST')
    runner.register_hook(Marks(calls, after), priority='LOWEST')
    start = len(calls)
    runner.train()
    per_iteration = [a - b for b, a in zip(before[0::2], after[1::2])]
    results[rank] = (per_iteration, calls[start:])
    dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_one_small_collective_per_iteration_in_all_parts_together(tmp_path):
    """2 gloo ranks, 2 epochs of 2 iterations (the sampler splits 4 samples), a checkpoint after
    each epoch, with RandomStateHook, FiniteLossHook, PreemptionHook and StallWatchdogHook: each
    iteration makes one collective of the parts (FiniteLossHook's all-reduce of two numbers,
    which carries PreemptionHook's stop signal); RandomStateHook gathers only at each epoch's
    end, where the checkpoint is saved. (DDP's gradient all-reduce runs in its C++ reducer, not
    through these functions.)"""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_count_collectives, args=(port, str(tmp_path), results), nprocs=2)
    for rank in (0, 1):
        per_iteration, calls = results[rank]
        assert per_iteration == [1, 1, 1, 1], per_iteration
        assert calls.count('all_gather_object') == 2 and calls.count('all_reduce') == 4, calls


# ------------------------------------------------------------------------------- data workers
class Draws(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.rand(1).item(), torch.randint(0, 2**30, ()).item()


def epoch_draws(loader, dataset, epoch):
    dataset.set_epoch(epoch, seed=7, rank=0)
    return [tuple(x.tolist() for x in batch) for batch in loader]


@pytest.mark.parametrize('persistent', [True, False])
def test_workers_draw_fresh_streams_each_epoch_and_replay_a_resumed_one(persistent):
    dataset = EpochSeededDataset(Draws())
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, persistent_workers=persistent)
    first, second = epoch_draws(loader, dataset, 0), epoch_draws(loader, dataset, 1)
    assert first != second
    resumed = EpochSeededDataset(Draws())  # a new run's new workers, starting at epoch 1
    again = torch.utils.data.DataLoader(resumed, batch_size=2, num_workers=2, persistent_workers=persistent)
    assert epoch_draws(again, resumed, 1) == second
    assert len(dataset) == 4 and dataset.dataset.__class__ is Draws


def test_epoch_seeded_dataset_passes_attributes_through():
    from toy import ToyDataset
    dataset = EpochSeededDataset(ToyDataset())
    assert dataset.metainfo == dict(classes=('zero', 'one')) and len(dataset) == 8
    assert dataset[3]['inputs'].tolist() == [3.0, 3.0]


# ------------------------------------------------------------------------------- resume fallback
def test_the_fallback_resume_passes_over_best_and_weights_only_files(tmp_path):
    full = dict(state_dict={}, optimizer={}, message_hub={}, meta={})
    torch.save(full, tmp_path / 'epoch_1.pth')
    torch.save(dict(state_dict={}, meta={}), tmp_path / 'epoch_2.pth')  # save_optimizer=False
    torch.save(dict(full), tmp_path / 'best_coco_bbox_mAP_epoch_2.pth')
    (tmp_path / 'truncated.pth').write_bytes(b'PK\x03\x04 no zip')
    for i, name in enumerate(['epoch_1.pth', 'epoch_2.pth', 'best_coco_bbox_mAP_epoch_2.pth', 'truncated.pth']):
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    lines = []
    assert find_resume_checkpoint(str(tmp_path), log=lines.append) == str(tmp_path / 'epoch_1.pth')
    assert lines == [f'no usable last_checkpoint in {tmp_path}: resuming from {tmp_path}/epoch_1.pth, the newest '
                     'checkpoint with optimizer and message-hub state (passed over: truncated.pth, '
                     'best_coco_bbox_mAP_epoch_2.pth, epoch_2.pth)']
    os.remove(tmp_path / 'epoch_1.pth')
    assert find_resume_checkpoint(str(tmp_path), log=lines.append) is None


# ------------------------------------------------------------------------------- a run that raises
SCRIPT = textwrap.dedent('''
    import signal, sys, threading, time
    import torch
    sys.path.insert(0, {tests!r})
    from test_run_parts import toy_runner
    import convmlp_mm
    from mmengine.hooks import Hook

    class Fails(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.iter == 1:
                raise RuntimeError('a bug in iteration 2')

    class Slow(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            time.sleep(0.6)

    before = signal.getsignal(signal.SIGTERM)
    parts = [dict(type='PreemptionHook'), dict(type='StallWatchdogHook', timeout=1, exit_delay=0),
             dict(type='FiniteLossHook'), dict(type='RandomStateHook')]
    runner = toy_runner({work!r} + '/first', hooks=parts, train_cfg=dict(type={loop!r}, max_epochs=1))
    runner.register_hook(Fails())
    try:
        runner.train()
    except RuntimeError as error:
        print('first run:', error)
    print('handler after the failed run is the original:', signal.getsignal(signal.SIGTERM) is before)
    print('watchdog threads:', sum(t.name == 'StallWatchdogHook' for t in threading.enumerate()))
    runner = toy_runner({work!r} + '/second', hooks=[dict(type='PreemptionHook')], epochs=2,
                        train_cfg=dict(type={loop!r}, max_epochs=2))
    runner.register_hook(Slow())
    runner.train()  # 8 iterations of 0.6 s: longer than the first run's 1 s timeout
    print('second run ended; handler is the original:', signal.getsignal(signal.SIGTERM) is before)
''')


@pytest.mark.slow  # a process of its own (the watchdog would end it)
@pytest.mark.parametrize('loop', ['ResumableEpochBasedTrainLoop', 'EpochBasedTrainLoop'])
def test_a_run_that_raises_leaves_nothing_behind_for_the_next_run(tmp_path, loop):
    script = tmp_path / 'runs.py'
    script.write_text(SCRIPT.format(tests=osp.dirname(__file__), work=str(tmp_path), loop=loop))
    proc = tool_runner.run([sys.executable, str(script)], tmp_path, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert 'first run: a bug in iteration 2' in out
    # our loops take the parts back at once; on mmengine's, the next run does (and a stale
    # watchdog stops itself once its run is gone)
    if loop.startswith('Resumable'):
        assert 'handler after the failed run is the original: True' in out and 'watchdog threads: 0' in out
    assert 'second run ended; handler is the original: True' in out
    assert 'made no progress' not in out


def test_a_signal_handler_left_behind_passes_the_signal_on():
    from convmlp_mm.engine import PreemptionHook
    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))
    try:
        hook = PreemptionHook(signals=['SIGUSR2'])

        class Runner_:
            train_loop = Toy()
        hook.before_train(Runner_())  # a run whose loop is not running: as after it raised
        signal.raise_signal(signal.SIGUSR2)
        assert seen == [signal.SIGUSR2] and hook.received == 0
        assert signal.getsignal(signal.SIGUSR2) is not hook._on_signal
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_the_cpu_wrapper_takes_the_configs_find_unused_parameters():
    """mmengine passes the top-level ``find_unused_parameters`` only to its own default wrapper;
    the wrapper our tools choose on the CPU carries it too."""
    from mmengine.config import Config

    from convmlp_mm import cli
    for flag in (True, False):
        cfg = Config(dict(launcher='pytorch', find_unused_parameters=flag, train_cfg=dict(by_epoch=True, max_epochs=1),
                          default_hooks=dict(checkpoint=dict(interval=1))))
        assert 'CPUDistributedDataParallel' in cli.use_runtime_parts(cfg, training=True)
        assert cfg.model_wrapper_cfg == dict(type='CPUDistributedDataParallel', find_unused_parameters=flag)


class SignalAt(Hook):
    """Sends this process ``signum`` after training iteration index ``at``."""

    def __init__(self, at, signum=signal.SIGTERM):
        self.at, self.signum = at, signum

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter == self.at:
            os.kill(os.getpid(), self.signum)


def test_a_stop_after_an_epochs_last_batch_resumes_into_the_next_epoch(tmp_path):
    """A preemption checkpoint saved after the last batch of epoch 1 (before the epoch's end hooks
    ran): the resumed run ends that epoch without training it again and then trains epoch 2, to
    the weights and iteration count of an uninterrupted run."""
    torch.manual_seed(1)  # the same initial weights
    whole = toy_runner(tmp_path / 'whole', epochs=2)
    whole.train()
    torch.manual_seed(1)
    parts = toy_runner(tmp_path / 'parts', hooks=[dict(type='PreemptionHook')], epochs=2)
    parts.register_hook(SignalAt(3))  # the 4th and last batch of epoch 1
    with pytest.raises(SystemExit):
        parts.train()
    resumed = toy_runner(tmp_path / 'parts', hooks=[dict(type='SafeCheckpointLoadHook'), dict(type='PreemptionHook')],
                         epochs=2, resume=True, load_from=str(tmp_path / 'parts/iter_4.pth'))
    resumed.train()
    assert (resumed.iter, resumed.epoch) == (whole.iter, whole.epoch) == (8, 2)
    assert torch.equal(resumed.model.fc.weight, whole.model.fc.weight)
