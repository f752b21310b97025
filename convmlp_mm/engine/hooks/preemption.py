"""A job told to stop (Slurm's preemption, time limit, ``--signal``) saves a checkpoint and
asks to be requeued."""
import logging
import os
import signal
import subprocess
import threading
from typing import Optional, Sequence

import torch
from mmengine.dist import all_reduce, barrier, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ..fileio import write_atomically
from .random_state import RandomStateHook
from .running import loop_frame, on_stack
from .stall_watchdog import StallWatchdogHook


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
    it; the run's :class:`StallWatchdogHook` is paused on every rank meanwhile), rank 0 asks
    Slurm to requeue the job (when ``requeue``, the run is a Slurm job and the signal was
    SIGUSR1 or a time limit's SIGTERM: see :func:`requeue_slurm_job`), and every rank raises
    :class:`Preempted`, which exits with 128 + the signal's number.
    ``tools/train.py --resume`` (automatic in a requeued Slurm job) continues from that
    checkpoint, in the middle of its epoch (with the resumable loops of
    :mod:`convmlp_mm.engine.loops`), to the weights an uninterrupted run ends with.

    A signal during validation takes effect at the first training iteration after it. The data
    workers, forked after the handlers are installed, ignore these signals (the main process
    ends them). In a distributed run the ranks agree by one all-reduce of one number per
    iteration, or by none of its own where :class:`FiniteLossHook` carries the number in its
    all-reduce (:meth:`agree`).

    The handlers are installed in ``before_train`` and the previous ones put back in
    ``after_train``, or, when the run raises, in ``after_run_raised`` (called by the resumable
    loops); a handler that a run on another loop left installed is replaced by the one it
    replaced when the next run installs its own, and until then passes the signal on to it.

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
        self._agreed: Optional[int] = None
        self._previous = {}
        self._run = None  # the frame of the training loop's run()

    def _on_signal(self, signum: int, frame) -> None:
        if not on_stack(self._run, frame=frame):  # left installed by a run that raised: pass it on
            handler = self._previous.pop(signum, signal.SIG_DFL)
            signal.signal(signum, handler)
            if callable(handler):
                handler(signum, frame)
            else:
                signal.raise_signal(signum)
            return
        if not self.received:
            self.received = signum

    def agree(self, signum: int) -> None:
        """The ranks' stop signal for this iteration (the maximum of their ``received``), from an
        all-reduce another part made: this iteration needs none of its own."""
        self._agreed = signum

    def before_train(self, runner) -> None:
        if threading.current_thread() is not threading.main_thread():
            print_log('PreemptionHook: training does not run in the main thread, so no signal handlers '
                      'are installed', logger='current', level=logging.WARNING)
            return
        self._run = loop_frame(runner.train_loop)
        for signum in self.signals:
            current = signal.getsignal(signum)
            stale = getattr(current, '__self__', None)
            if isinstance(stale, PreemptionHook) and stale is not self:  # left by a run that raised
                current = stale._previous.pop(signum, current)
            self._previous[signum] = current
            signal.signal(signum, self._on_signal)

    def after_train(self, runner) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        self._run = None

    def after_run_raised(self, runner) -> None:
        self.after_train(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        signum, self._agreed = self._agreed, None
        if signum is None:
            received = torch.tensor([self.received], dtype=torch.int64)
            if get_world_size() > 1:
                all_reduce(received, op='max')
            signum = int(received.item())
        if not signum:
            return
        name = signal.Signals(signum).name
        print_log(f'PreemptionHook: {name} received; saving a checkpoint after iteration {runner.iter + 1}',
                  logger='current', level=logging.WARNING)
        for hook in runner.hooks:
            if isinstance(hook, RandomStateHook):
                hook.gather()  # every rank's state, into the checkpoint rank 0 writes
            if isinstance(hook, StallWatchdogHook):
                hook.pause('saving the preemption checkpoint')  # rank 0 writes it, the others wait in the barrier
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
