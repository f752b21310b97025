"""Non-finite losses never reach the weights."""
from typing import Optional

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

from .preemption import PreemptionHook


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Checks the loss before each optimizer step.

    The check replaces the run's ``optim_wrapper.update_params`` (once, from ``before_train`` to
    ``after_train``) by the same steps with the decision between the backward and the optimizer
    step. In a distributed run the ranks decide together with one all-reduce of two numbers per
    iteration, after the backward (where DDP has brought them together, so it waits for nobody),
    which also carries :class:`PreemptionHook`'s stop signal when that hook is in the run (so that
    hook needs no collective of its own).

    Args:
        action (str): What a NaN or infinite loss on any rank does: ``'stop'`` (default)
            raises ``FloatingPointError`` naming the iteration, before the step, so no
            non-finite value reaches the weights or a checkpoint; ``'skip'`` drops that
            loss's gradients on every rank, logs a warning and goes on. With gradient
            accumulation (``accumulative_counts``) the skipped iteration still counts, and the
            gradients accumulated in its window before it are dropped with its own (after the
            backward they hold its non-finite values); the window's later iterations step as usual.
        max_skips (int): With ``'skip'``, stop anyway after this many skipped iterations.
    """
    priority = 'VERY_HIGH'

    def __init__(self, action: str = 'stop', max_skips: int = 100) -> None:
        if action not in ('stop', 'skip'):
            raise ValueError(f"FiniteLossHook(action={action!r}) is invalid: expected 'stop' or 'skip'")
        self.action = action
        self.max_skips = max_skips
        self.skipped = 0
        self._wrapped = None  # the optim wrapper whose update_params is checked

    def before_train(self, runner) -> None:
        optim_wrapper = runner.optim_wrapper
        if self._wrapped is optim_wrapper:
            return
        preemption: Optional[PreemptionHook] = next((h for h in runner.hooks if isinstance(h, PreemptionHook)), None)
        by_epoch = isinstance(runner.train_loop, EpochBasedTrainLoop)

        def checked_update_params(loss: torch.Tensor, step_kwargs: Optional[dict] = None,
                                  zero_kwargs: Optional[dict] = None) -> None:
            # OptimWrapper.update_params with the ranks' decision between the backward and the step:
            # after the backward (where DDP has synchronised the ranks) the all-reduce waits for nobody
            local = (~torch.isfinite(loss.detach()).all()).to(torch.int64)
            optim_wrapper.backward(optim_wrapper.scale_loss(loss))
            # [non-finite on this rank, stop signal]: the max over the ranks is every rank's decision
            flags = torch.stack([local, torch.tensor(preemption.received if preemption else 0, device=loss.device)])
            if get_world_size() > 1:
                all_reduce(flags, op='max')
            nonfinite, signum = flags.tolist()
            if preemption is not None:
                preemption.agree(signum)
            if not nonfinite:
                if optim_wrapper.should_update():
                    optim_wrapper.step(**(step_kwargs or {}))
                    optim_wrapper.zero_grad(**(zero_kwargs or {}))
                return
            where = f'iteration {runner.iter + 1}' + (f' (epoch {runner.epoch + 1})' if by_epoch else '')
            if self.action == 'stop' or self.skipped >= self.max_skips:
                raise FloatingPointError(
                    f'non-finite loss at {where} (on this rank: {loss.detach().flatten()[:1].item()}); '
                    'training stopped before the optimizer step, so the weights and checkpoints hold no '
                    "NaN. Lower the lr or enable clip_grad, or use FiniteLossHook(action='skip')"
                    + (f'; {self.skipped} steps were skipped already' if self.skipped else ''))
            self.skipped += 1
            optim_wrapper.zero_grad()  # the non-finite gradients, and those accumulated in this window before them
            print_log(f'FiniteLossHook: non-finite loss at {where}: skipped '
                      f'({self.skipped} of at most {self.max_skips})', logger='current', level=30)

        optim_wrapper.update_params = checked_update_params
        self._wrapped = optim_wrapper

    def after_train(self, runner) -> None:
        if self._wrapped is not None:
            del self._wrapped.update_params  # the wrapper's own method again
            self._wrapped = None
