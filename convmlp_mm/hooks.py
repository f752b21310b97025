"""Training hooks that make long runs recoverable. Our recipe configs add the first two to
``custom_hooks``; ``tools/train.py`` adds the last two to every run.

- :class:`RandomStateHook` puts every rank's random state (torch, numpy, python) into each
  checkpoint and restores it on resume, so that a resumed run draws the same random numbers
  (drop path, RoI sampling, the data loader's shuffling seed) as an uninterrupted one.
- :class:`FiniteLossHook` checks the loss before every optimizer step: a NaN or infinite
  loss stops training with the iteration named (default), or skips that step, on every
  rank alike, so non-finite values never reach the weights.
- :class:`PreemptionHook`: on SIGTERM or SIGUSR1 (Slurm's preemption, time limit and
  ``--signal`` warning) every rank finishes its iteration, a checkpoint is saved, Slurm is
  asked to requeue the job (not after a ``scancel``), and the process exits with 128 + the
  signal's number.
- :class:`StallWatchdogHook`: a rank that makes no progress for ``timeout`` seconds writes
  the Python stack of each of its threads to the log and exits with code 124, instead of
  waiting for the collective timeout.

With ``--amp``, ``tools/test.py`` also adds :class:`PrepareInferenceHook`, which prepares the
loaded model for inference (:func:`convmlp_mm.prepare_inference`) before testing, and tests in
:class:`AmpTestLoop`.
"""
import faulthandler
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import all_gather_object, all_reduce, barrier, get_rank, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS, LOOPS
from mmengine.runner import EpochBasedTrainLoop, TestLoop
from mmengine.structures import BaseDataElement

from .compat import trained_batches_to_skip, write_atomically

#: The key of :class:`RandomStateHook`'s states in a checkpoint.
RANDOM_STATE_KEY = 'random_states'


def random_state() -> dict:
    """This process's torch (CPU and, when present, CUDA), numpy and python random states."""
    state = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict) -> None:
    """Restores a :func:`random_state`."""
    torch.set_rng_state(state['torch'])
    np.random.set_state(state['numpy'])
    random.setstate(state['python'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Saves every rank's random state with each checkpoint and restores it on resume.

    mmengine reseeds a resumed run from the configured seed, so without this hook the random
    numbers after a resume differ from those of an uninterrupted run. The states are
    captured after each training iteration and epoch (before the checkpoint hook, which runs
    last), gathered from all ranks, and restored when the resumed training starts (after a
    mid-epoch checkpoint: once the loop has skipped the batches it trained), each rank its own
    (in a distributed run: one all-gather of a few KB per iteration). A checkpoint from another
    number of ranks restores nothing (with a warning).

    Exact continuation also needs the data loader's workers to replay the same augmentations:
    mmengine seeds them from the seed alone, so that holds with ``num_workers >= 1`` and
    non-persistent workers (``tools/train.py`` turns ``persistent_workers`` off when
    ``randomness.deterministic`` is set).
    """
    priority = 'LOW'  # after the other hooks' after_train_iter, before CheckpointHook (VERY_LOW)

    def __init__(self) -> None:
        self._states: Optional[List[dict]] = None
        self._pending: Optional[dict] = None
        self._before_val: Optional[dict] = None

    def _capture(self) -> None:
        own = random_state()
        self._states = all_gather_object(own) if get_world_size() > 1 else [own]

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._capture()

    def after_train_epoch(self, runner) -> None:
        self._capture()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._states is None:  # saved before any training step: the current state
            self._capture()
        checkpoint[RANDOM_STATE_KEY] = self._states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        states = checkpoint.get(RANDOM_STATE_KEY)
        if states is None:
            return
        if len(states) != get_world_size():
            print_log(f'{type(self).__name__}: the checkpoint holds the random states of {len(states)} '
                      f'ranks, this run has {get_world_size()}; random states are not restored',
                      logger='current', level=30)
            return
        # restored in before_train: mmengine may still reseed after loading the checkpoint
        self._pending = states[get_rank()]

    def before_train(self, runner) -> None:
        if trained_batches_to_skip(runner.train_loop) <= 0:  # else restored once they are skipped
            self.after_skip_trained_batches(runner)

    def after_skip_trained_batches(self, runner) -> None:
        """Called by the training loop (:mod:`convmlp_mm.compat`, shim 9) after a resumed run
        has drawn (and discarded) the batches its checkpoint trained: drawing them consumes
        random numbers."""
        if self._pending is not None:
            set_random_state(self._pending)
            self._pending = None

    # validation (its data loader draws a seed) does not consume the training's random numbers,
    # so that a run resumed after a validation draws what an uninterrupted run draws
    def before_val(self, runner) -> None:
        self._before_val = random_state()

    def after_val(self, runner) -> None:
        set_random_state(self._before_val)


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Checks the loss before each optimizer step.

    Args:
        action (str): What a NaN or infinite loss on any rank does: ``'stop'`` (default)
            raises ``FloatingPointError`` naming the iteration, before the step, so no
            non-finite value reaches the weights or a checkpoint; ``'skip'`` drops that
            step's gradients on every rank, logs a warning and goes on.
        max_skips (int): With ``'skip'``, stop anyway after this many skipped steps.
    """
    priority = 'VERY_HIGH'

    def __init__(self, action: str = 'stop', max_skips: int = 100) -> None:
        if action not in ('stop', 'skip'):
            raise ValueError(f"FiniteLossHook(action={action!r}) is invalid: expected 'stop' or 'skip'")
        self.action = action
        self.max_skips = max_skips
        self.skipped = 0

    def before_train(self, runner) -> None:
        optim_wrapper = runner.optim_wrapper
        update_params = optim_wrapper.update_params
        by_epoch = isinstance(runner.train_loop, EpochBasedTrainLoop)

        def checked_update_params(loss: torch.Tensor, *args, **kwargs):
            finite = torch.isfinite(loss.detach()).all().to(torch.float32).reshape(1)
            all_reduce(finite, op='min')  # every rank takes the same decision
            if bool(finite.item()):
                return update_params(loss, *args, **kwargs)
            where = f'iteration {runner.iter + 1}' + (f' (epoch {runner.epoch + 1})' if by_epoch else '')
            if self.action == 'stop' or self.skipped >= self.max_skips:
                raise FloatingPointError(
                    f'non-finite loss at {where} (on this rank: {loss.detach().flatten()[:1].item()}); '
                    'training stopped before the optimizer step, so the weights and checkpoints hold no '
                    "NaN. Lower the lr or enable clip_grad, or use FiniteLossHook(action='skip')"
                    + (f'; {self.skipped} steps were skipped already' if self.skipped else ''))
            self.skipped += 1
            loss.backward()  # as usual, so that distributed gradient hooks see their step; then dropped
            optim_wrapper.zero_grad()
            print_log(f'FiniteLossHook: non-finite loss at {where}: step skipped '
                      f'({self.skipped} of at most {self.max_skips})', logger='current', level=30)

        optim_wrapper.update_params = checked_update_params


# ------------------------------------------------------------------------------------ preemption
class Preempted(SystemExit):
    """Raised on every rank after :class:`PreemptionHook` has saved its checkpoint; the process
    exits quietly with ``128 + signal number`` (143 for SIGTERM, 138 for SIGUSR1), as a shell
    reports a process a signal stopped, so that nothing chained after training mistakes the run
    for a finished one."""

    def __init__(self, signum: int, checkpoint: str) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.checkpoint = checkpoint


def slurm_job_fields(job_id: str, env: Optional[dict] = None) -> dict:
    """``scontrol show job``'s fields of job ``job_id`` (JobState, Reason, Restarts, ...);
    empty when Slurm does not know the job."""
    shown = subprocess.run(['scontrol', '-o', 'show', 'job', job_id], env=env, capture_output=True, text=True)
    return dict(field.split('=', 1) for field in shown.stdout.split() if '=' in field)


def requeue_slurm_job(job_id: str, signum: int) -> str:
    """Asks Slurm to requeue batch job ``job_id`` after signal ``signum``, unless that was a
    SIGTERM without a time limit: a ``scancel`` (which must stay cancelled; Slurm reports it as
    COMPLETING with no reason, like a preemption, which Slurm requeues itself where the
    partition's ``PreemptMode`` is REQUEUE). Returns what happened, for the log."""
    if signum == signal.SIGTERM and slurm_job_fields(job_id).get('Reason') != 'TimeLimit':
        return (f'Slurm job {job_id} is not requeued: SIGTERM before its time limit comes from scancel (or a '
                'preemption, which Slurm requeues itself where configured)')
    proc = subprocess.run(['scontrol', 'requeue', job_id], capture_output=True, text=True)
    if proc.returncode:
        return (f'Slurm did not requeue job {job_id} ({(proc.stderr or proc.stdout).strip()}); only jobs '
                'submitted with sbatch can be requeued: resubmit it with --resume')
    return f'Slurm job {job_id} requeued: it resumes from this checkpoint when it starts again'


@HOOKS.register_module()
class PreemptionHook(Hook):
    """Saves a checkpoint and stops at the next iteration boundary when the job is told to stop.

    Slurm sends SIGTERM when a job is preempted, reaches its time limit or is cancelled (and
    SIGKILL ``KillWait``, 30 s by default, later), and the signal ``--signal=USR1@SECONDS``
    asks for, that many seconds before the time limit. On one of ``signals`` (on any rank)
    every rank finishes its current training iteration; then a checkpoint ``iter_N.pth`` is
    saved where the :class:`~mmengine.hooks.CheckpointHook` saves (``last_checkpoint`` names
    it), rank 0 asks Slurm to requeue the job (when ``requeue``, the run is a Slurm job and the
    signal was SIGUSR1 or a time limit's SIGTERM: see :func:`requeue_slurm_job`), and every
    rank raises :class:`Preempted`, which exits with 128 + the signal's number. ``tools/train.py --resume`` (automatic in a requeued Slurm job) continues
    from that checkpoint, in the middle of its epoch, to the weights an uninterrupted run ends
    with.

    A signal during validation takes effect at the first training iteration after it. The data
    workers, forked after the handlers are installed, ignore these signals (the main process
    ends them). In a distributed run the ranks agree by one all-reduce of one number per
    iteration.

    Args:
        signals (Sequence[str]): The signals that stop training. Defaults to SIGTERM and SIGUSR1.
        requeue (bool): Ask Slurm to requeue the job. Defaults to True.
    """
    priority = 'LOWEST'  # after RandomStateHook captured this iteration's state and CheckpointHook saved

    def __init__(self, signals: Sequence[str] = ('SIGTERM', 'SIGUSR1'), requeue: bool = True) -> None:
        allowed = sorted(s.name for s in signal.Signals if s.name not in ('SIGKILL', 'SIGSTOP'))
        unknown = [name for name in signals if name not in allowed]
        if unknown or not signals:
            raise ValueError(f'PreemptionHook(signals={list(signals)!r}): {unknown or "none given"} '
                             f'not allowed; expected one or more of {", ".join(allowed)}')
        self.signals = [signal.Signals[name] for name in signals]
        self.requeue = requeue
        self.received = 0
        self._previous = {}

    def _on_signal(self, signum: int, frame) -> None:
        if not self.received:
            self.received = signum

    def before_train(self, runner) -> None:
        if threading.current_thread() is not threading.main_thread():
            print_log('PreemptionHook: training does not run in the main thread, so no signal handlers '
                      'are installed', logger='current', level=logging.WARNING)
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def after_train(self, runner) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        received = torch.tensor([self.received], dtype=torch.int64)
        if get_world_size() > 1:
            all_reduce(received, op='max')
        signum = int(received.item())
        if not signum:
            return
        name = signal.Signals(signum).name
        print_log(f'PreemptionHook: {name} received; saving a checkpoint after iteration {runner.iter + 1}',
                  logger='current', level=logging.WARNING)
        checkpoint_hook = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        out_dir = getattr(checkpoint_hook, 'out_dir', None) or runner.work_dir
        filename = f'iter_{runner.iter + 1}.pth'
        runner.save_checkpoint(out_dir, filename, save_optimizer=True, save_param_scheduler=True, by_epoch=False,
                               backend_args=getattr(checkpoint_hook, 'backend_args', None))
        path = os.path.join(out_dir, filename)
        if is_main_process():
            write_atomically(os.path.join(runner.work_dir, 'last_checkpoint'), path, 'w')
        barrier()  # the checkpoint is complete before any rank exits
        message = f'PreemptionHook: checkpoint {path} saved'
        if self.requeue and is_main_process() and os.environ.get('SLURM_JOB_ID'):
            message += '; ' + requeue_slurm_job(os.environ['SLURM_JOB_ID'], signum)
        print_log(f'{message}; stopping with exit code {128 + signum}', logger='current', level=logging.WARNING)
        raise Preempted(signum, path)


# ------------------------------------------------------------------------------- stalled ranks
#: Seconds without progress after which :class:`StallWatchdogHook` stops a rank (the default of
#: ``tools/train.py --stall-timeout`` and ``tools/test.py --stall-timeout``).
DEFAULT_STALL_TIMEOUT = 600.0


@HOOKS.register_module()
class StallWatchdogHook(Hook):
    """Stops a job in which a rank makes no progress, with every rank's Python stacks in the log.

    A watchdog thread on each rank expects progress (a finished training, validation or test
    iteration) at least every ``timeout`` seconds; the time a metric takes to compute after the
    last validation or test batch does not count. When that time passes, the rank writes which
    rank it is, where it was last seen and the stack of each of its threads to standard error
    (the job's log under Slurm and torchrun; each line labelled ``[rank N]``) and to its log
    file, waits ``exit_delay`` seconds (so the ranks waiting for it in a collective reach their
    own timeout and write their stacks too) and exits with code 124. Should the watchdog thread itself not get to run
    (a stall that holds the GIL), faulthandler writes the stacks and exits (code 1)
    ``timeout + 60`` seconds after the last progress.

    Args:
        timeout (float): Seconds without progress before the rank stops. Defaults to
            :data:`DEFAULT_STALL_TIMEOUT` (600).
        exit_delay (float): Seconds between writing the stacks and exiting. Defaults to 10.
    """
    priority = 'LOWEST'
    EXIT_CODE = 124

    def __init__(self, timeout: float = DEFAULT_STALL_TIMEOUT, exit_delay: float = 10.0) -> None:
        if not timeout > 0 or not exit_delay >= 0:
            raise ValueError(f'StallWatchdogHook(timeout={timeout!r}, exit_delay={exit_delay!r}): timeout must be '
                             '> 0 seconds and exit_delay >= 0')
        self.timeout = float(timeout)
        self.exit_delay = float(exit_delay)
        self._deadline: Optional[float] = None
        self._where = 'not started'
        self._log_files = []
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    # progress -----------------------------------------------------------------------------
    def _arm(self, where: str) -> None:
        if self._thread is None:  # not watching (a validation outside training)
            return
        self._where = where
        self._deadline = time.monotonic() + self.timeout
        faulthandler.dump_traceback_later(self.timeout + 60, exit=True)

    def _pause(self, where: str) -> None:
        self._where = where
        self._deadline = None
        if self._thread is not None:
            faulthandler.cancel_dump_traceback_later()

    def _start(self, runner, where: str) -> None:
        self._finish()
        self._log_files = [h.stream for h in runner.logger.handlers if isinstance(h, logging.FileHandler)]
        # the frames that mean "still running": a run that raised is over, and is not a stall
        self._runner_codes = {getattr(type(runner), name).__code__ for name in ('train', 'val', 'test')}
        self._runner_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(self._stop, ), name='StallWatchdogHook', daemon=True)
        self._thread.start()
        self._arm(where)

    def _finish(self) -> None:
        self._pause('finished')
        self._stop.set()
        self._thread = None

    def _still_running(self) -> bool:
        frame = sys._current_frames().get(self._runner_thread)
        while frame is not None:
            if frame.f_code in self._runner_codes:
                return True
            frame = frame.f_back
        return False

    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(min(1.0, self.timeout / 10)):
            deadline = self._deadline
            if deadline is not None and time.monotonic() > deadline:
                if not self._still_running():  # the run ended with an exception
                    self._finish()
                    return
                self._report_and_exit()

    def _report_and_exit(self) -> None:
        rank = get_rank()
        with tempfile.TemporaryFile('w+') as stacks:
            faulthandler.dump_traceback(file=stacks, all_threads=True)
            stacks.seek(0)
            text = (f'StallWatchdogHook: rank {rank} of {get_world_size()} (pid {os.getpid()}) made no progress for '
                    f'{self.timeout:.0f} s; last progress: {self._where}. Its threads:\n{stacks.read()}'
                    f'StallWatchdogHook: rank {rank} stops with exit code {self.EXIT_CODE}\n')
        # ranks share standard error: one write per line, each line labelled (like srun --label)
        for line in text.splitlines():
            os.write(2, f'[rank {rank}] {line}\n'.encode())
        for stream in self._log_files:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):  # a closed or unwritable log
                pass
        time.sleep(self.exit_delay)
        os._exit(self.EXIT_CODE)

    # where progress is seen ---------------------------------------------------------------
    def before_train(self, runner) -> None:
        self._start(runner, 'before the first training iteration')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._arm(f'training iteration {runner.iter + 1}')

    def after_train(self, runner) -> None:
        self._finish()

    def before_val(self, runner) -> None:
        self._arm('before validation')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if batch_idx + 1 == len(runner.val_dataloader):
            self._pause('computing the validation metrics')
        else:
            self._arm(f'validation batch {batch_idx + 1}')

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._arm('after validation')

    def before_test(self, runner) -> None:
        self._start(runner, 'before the first test batch')

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if batch_idx + 1 == len(runner.test_dataloader):
            self._pause('computing the test metrics')
        else:
            self._arm(f'test batch {batch_idx + 1}')

    def after_test(self, runner) -> None:
        self._finish()


@HOOKS.register_module()
class PrepareInferenceHook(Hook):
    """Before testing, after the checkpoint is loaded: :func:`~convmlp_mm.prepare_inference` on
    the model (eval mode, our backbones fused, with ``channels_last`` the whole model in
    channels-last memory). For test runs only: the model is changed in place and cannot train
    afterwards.

    Args:
        channels_last (bool): Convert the whole model to channels-last memory. Defaults to True.
    """
    priority = 'VERY_LOW'

    def __init__(self, channels_last: bool = True) -> None:
        self.channels_last = channels_last

    def before_test(self, runner) -> None:
        from .models.fusion import prepare_inference
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        prepare_inference(model, self.channels_last)


def half_to_float(data):
    """``data`` (tensors, data samples and their fields, lists, tuples, dicts) with every float16 and
    bfloat16 tensor converted to float32, in place for data samples."""
    if isinstance(data, torch.Tensor):
        return data.float() if data.dtype in (torch.float16, torch.bfloat16) else data
    if isinstance(data, BaseDataElement):
        for key in data.keys():
            setattr(data, key, half_to_float(getattr(data, key)))
        return data
    if isinstance(data, (list, tuple)):
        return type(data)(half_to_float(item) for item in data)
    if isinstance(data, dict):
        return {key: half_to_float(value) for key, value in data.items()}
    return data


@LOOPS.register_module()
class AmpTestLoop(TestLoop):
    """mmengine's ``TestLoop`` under autocast (``fp16=True``: float16 on GPUs, bfloat16 on the
    CPU) whose predictions reach the metrics and hooks in float32: mmdet's and mmseg's metrics
    and visualizers call ``.numpy()``, which has no bfloat16. ``tools/test.py --amp`` uses it.

    Args:
        runner, dataloader, evaluator: as ``TestLoop``'s.
        fp16 (bool): Autocast. Defaults to True.
    """

    def __init__(self, runner, dataloader, evaluator, fp16: bool = True) -> None:
        super().__init__(runner, dataloader, evaluator, fp16=fp16)

    def run_iter(self, idx, data_batch) -> None:
        model = self.runner.model
        test_step = model.test_step
        model.test_step = lambda data: half_to_float(test_step(data))
        try:
            super().run_iter(idx, data_batch)
        finally:
            del model.test_step  # the class's method again
