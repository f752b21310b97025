"""A rank that makes no progress stops the job, with every rank's Python stacks in the log."""
import faulthandler
import logging
import os
import tempfile
import threading
import time
from typing import List, Optional

from mmengine.dist import barrier, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .running import loop_frame, on_stack

#: Seconds without progress after which :class:`StallWatchdogHook` stops a rank (the default of
#: ``tools/train.py --stall-timeout`` and ``tools/test.py --stall-timeout``).
DEFAULT_STALL_TIMEOUT = 600.0

_watching: List['StallWatchdogHook'] = []  # the hook whose thread watches, and owns faulthandler's timer


def saved_checkpoints(runner) -> dict:
    """The checkpoints that mmengine's ``CheckpointHook`` saved last, as it records them in the
    message hub on every rank (``last_ckpt``; ``best_ckpt``, or ``best_ckpt_METRIC`` per metric)."""
    return {key: value for key, value in runner.message_hub.runtime_info.items()
            if key == 'last_ckpt' or key.startswith('best_ckpt')}


@HOOKS.register_module()
class StallWatchdogHook(Hook):
    """Stops a job in which a rank makes no progress, with every rank's Python stacks in the log.

    A watchdog thread on each rank expects progress (a finished training, validation or test
    iteration, the end of a training epoch or of a validation) at least every ``timeout`` seconds.
    It is paused, so that these do not count:

    - the start of a run, until its first training iteration (in a test run, its first test
      batch) has finished, that iteration included: loading data, skipping the batches a resumed
      epoch trained, ``torch.compile`` compiling in the first iteration (a checkpoint to resume
      from is read before the run starts);
    - computing the metrics after the last validation or test batch;
    - writing a checkpoint: on rank 0 from ``before_save_checkpoint`` (mmengine calls it when the
      checkpoint's contents are gathered, before the file is written) until the next progress.
      mmengine writes checkpoints on rank 0 alone, so the other ranks would count the write
      while they wait for rank 0 in their next collective: after a checkpoint of the run's
      ``CheckpointHook`` (seen in :func:`saved_checkpoints`, the same on every rank) every rank
      waits for rank 0 in one barrier, paused, and :class:`PreemptionHook` pauses every rank
      while it saves.

    Everything else counts: each training iteration after the first, each validation and test
    batch, and the hooks between them. When that time passes, the rank writes which
    rank it is, where it was last seen and the stack of each of its threads to standard error
    (the job's log under Slurm and torchrun; each line labelled ``[rank N]``) and to its log
    file, waits ``exit_delay`` seconds (so the ranks waiting for it in a collective reach their
    own timeout and write their stacks too) and exits with code 124. Should the watchdog thread
    itself not get to run (a stall that holds the GIL), faulthandler writes the stacks and exits
    (code 1) ``timeout + 60`` to ``timeout + 70`` seconds after the last progress.

    One watchdog watches at a time in a process: one that starts stops a thread a run that raised
    left behind (as does ``after_run_raised``, which the resumable loops call), and a thread whose
    run has ended (its loop's ``run()`` no longer on the stack) stops itself (at its deadline, or
    within a second while paused);
    only the watching one arms and cancels faulthandler's timer.

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
        self._armed_at = float('-inf')  # when faulthandler's timer was last set
        self._counting = False  # the run's first training iteration (or test batch) has finished
        self._saved = {}  # saved_checkpoints() at the last progress

    # progress -----------------------------------------------------------------------------
    def _arm(self, where: str) -> None:
        if self._thread is None:  # not watching (a validation outside training)
            return
        if not self._counting:  # the run's first training iteration (or test batch) has not finished
            return
        self._where = where
        now = time.monotonic()
        self._deadline = now + self.timeout
        if now - self._armed_at > 10:  # re-armed at most every 10 s: each call starts a thread
            faulthandler.dump_traceback_later(self.timeout + 60, exit=True)
            self._armed_at = now

    def pause(self, where: str) -> None:
        """Stops counting until the next progress (``where``: what the rank does meanwhile)."""
        self._where = where
        self._deadline = None
        if self._thread is not None and self in _watching:
            faulthandler.cancel_dump_traceback_later()
            self._armed_at = float('-inf')

    def _start(self, runner, loop, where: str) -> None:
        for hook in list(_watching):  # this one, or one that a run that raised left watching
            hook._finish()
        _watching.append(self)
        self._log_files = [h.stream for h in runner.logger.handlers if isinstance(h, logging.FileHandler)]
        # the frame that means "still running": a run that raised is over, and is not a stall
        self._run = loop_frame(loop)
        self._runner_thread = threading.get_ident()
        self._stop = threading.Event()
        self._where, self._deadline, self._counting = where, None, False
        self._thread = threading.Thread(target=self._watch, args=(self._stop, ), name='StallWatchdogHook', daemon=True)
        self._thread.start()

    def _progress(self, runner, where: str) -> None:
        """Arms for ``where``; where the run's ``CheckpointHook`` saved a checkpoint since the last
        progress, every rank first waits, paused, until rank 0 has written it."""
        saved = saved_checkpoints(runner)
        if saved != self._saved and self._thread is not None and get_world_size() > 1:
            self.pause(f'waiting for rank 0 to write the checkpoint saved at {where}')
            barrier()
        self._saved = saved
        self._arm(where)

    def _finish(self) -> None:
        self.pause('finished')
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)  # it wakes within a second to see the stop
        self._run = None
        if self in _watching:
            _watching.remove(self)

    def _still_running(self) -> bool:
        return on_stack(self._run, self._runner_thread)

    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(min(1.0, self.timeout / 10)):
            deadline = self._deadline
            if deadline is not None and time.monotonic() <= deadline:
                continue
            if not self._still_running():  # the run ended with an exception
                self._finish()
                return
            if deadline is not None:
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
        self._start(runner, runner.train_loop, 'before the first training iteration')
        self._saved = saved_checkpoints(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._counting = True
        self._progress(runner, f'training iteration {runner.iter + 1}')

    def after_train_epoch(self, runner) -> None:
        self._progress(runner, f'the end of training epoch {runner.epoch + 1}')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self.pause('writing a checkpoint')

    def after_train(self, runner) -> None:
        self._finish()

    def before_val(self, runner) -> None:
        self._arm('before validation')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if batch_idx + 1 == len(runner.val_dataloader):
            self.pause('computing the validation metrics')
        else:
            self._arm(f'validation batch {batch_idx + 1}')

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._progress(runner, 'the end of validation')

    def before_test(self, runner) -> None:
        self._start(runner, runner.test_loop, 'before the first test batch')

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._counting = True
        if batch_idx + 1 == len(runner.test_dataloader):
            self.pause('computing the test metrics')
        else:
            self._arm(f'test batch {batch_idx + 1}')

    def after_test(self, runner) -> None:
        self._finish()

    def after_run_raised(self, runner) -> None:
        self._finish()
