"""Training hooks that make long runs recoverable. Our recipe configs add both to ``custom_hooks``.

- :class:`RandomStateHook` puts every rank's random state (torch, numpy, python) into each
  checkpoint and restores it on resume, so that a resumed run draws the same random numbers
  (drop path, RoI sampling, the data loader's shuffling seed) as an uninterrupted one.
- :class:`FiniteLossHook` checks the loss before every optimizer step: a NaN or infinite
  loss stops training with the iteration named (default), or skips that step, on every
  rank alike, so non-finite values never reach the weights.
"""
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, all_reduce, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

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
    last), gathered from all ranks, and restored at the start of the resumed training, each
    rank its own (in a distributed run: one all-gather of a few KB per iteration). A checkpoint
    from another number of ranks restores nothing (with a warning).

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
