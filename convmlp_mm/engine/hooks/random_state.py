"""Resumed runs that draw the random numbers of uninterrupted ones."""
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
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
