"""Resumed runs that draw the random numbers of uninterrupted ones."""
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

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
    numbers after a resume differ from those of an uninterrupted run. Each rank's state is
    captured after each training iteration and epoch (before the checkpoint hook, which runs
    last; a copy of a few KB, no communication), gathered from all ranks only where a checkpoint
    is saved next (the run's ``CheckpointHook`` is due, or :class:`PreemptionHook` saves: one
    all-gather then), and restored when the resumed training starts (after a mid-epoch
    checkpoint: once the loop has skipped the batches it trained), each rank its own. A
    checkpoint from another number of ranks restores nothing (with a warning); one saved at
    another moment (a best-metric checkpoint) holds no states.

    Exact continuation also needs the data loader's workers to replay the same augmentations:
    :class:`~convmlp_mm.engine.EpochSeededDataset` seeds them per epoch.
    """
    priority = 'LOW'  # after the other hooks' after_train_iter, before CheckpointHook (VERY_LOW)

    def __init__(self) -> None:
        self._own: Optional[dict] = None
        self._states: Optional[List[dict]] = None
        self._pending: Optional[dict] = None
        self._before_val: Optional[dict] = None

    def gather(self) -> None:
        """Every rank's last captured state, for the next checkpoint (called on every rank)."""
        own = self._own if self._own is not None else random_state()
        self._states = all_gather_object(own) if get_world_size() > 1 else [own]

    @staticmethod
    def _checkpoint_due(runner, by_epoch: bool) -> bool:
        """Whether the run's ``CheckpointHook`` saves after this iteration (``by_epoch``: epoch)."""
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and hook.by_epoch == by_epoch:
                if by_epoch:
                    return hook.every_n_epochs(runner, hook.interval, hook.save_begin) or \
                        (hook.save_last and hook.is_last_train_epoch(runner))
                return hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or \
                    (hook.save_last and hook.is_last_train_iter(runner))
        return False

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._own = random_state()
        if self._checkpoint_due(runner, by_epoch=False):
            self.gather()

    def after_train_epoch(self, runner) -> None:
        self._own = random_state()
        if self._checkpoint_due(runner, by_epoch=True):
            self.gather()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._states is None and get_world_size() == 1:  # saved outside the due points
            self.gather()
        if self._states is not None:
            checkpoint[RANDOM_STATE_KEY], self._states = self._states, None

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
        if getattr(runner.train_loop, 'batches_to_skip', 0) <= 0:  # else restored once they are skipped
            self.after_skip_trained_batches(runner)

    def after_skip_trained_batches(self, runner) -> None:
        """Called by the resumable training loops (:mod:`convmlp_mm.engine.loops`) after a resumed
        run has drawn (and discarded) the batches its checkpoint trained: drawing them consumes
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
