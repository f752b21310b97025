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

    The check wraps the run's ``optim_wrapper.update_params`` (once, from ``before_train`` to
    ``after_train``). In a distributed run the ranks decide together with one all-reduce of two
    numbers per iteration, which also carries :class:`PreemptionHook`'s stop signal when that
    hook is in the run (so that hook needs no collective of its own).

    Args:
        action (str): What a NaN or infinite loss on any rank does: ``'stop'`` (default)
            raises ``FloatingPointError`` naming the iteration, before the step, so no
            non-finite value reaches the weights or a checkpoint; ``'skip'`` drops that
            loss's gradients on every rank, logs a warning and goes on. With gradient
            accumulation (``accumulative_counts``) the skipped iteration still counts, the
            gradients accumulated before it are kept, and a window that ends with it makes no
            step (its gradients, summed across ranks with the non-finite ones, are dropped).
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
        update_params = optim_wrapper.update_params
        preemption: Optional[PreemptionHook] = next((h for h in runner.hooks if isinstance(h, PreemptionHook)), None)
        by_epoch = isinstance(runner.train_loop, EpochBasedTrainLoop)

        def checked_update_params(loss: torch.Tensor, *args, **kwargs):
            # [non-finite on this rank, stop signal]: the max over the ranks is every rank's decision
            flags = torch.stack([(~torch.isfinite(loss.detach()).all()).to(torch.int64),
                                 torch.tensor(preemption.received if preemption else 0, device=loss.device)])
            if get_world_size() > 1:
                all_reduce(flags, op='max')
            nonfinite, signum = flags.tolist()
            if preemption is not None:
                preemption.agree(signum)
            if not nonfinite:
                return update_params(loss, *args, **kwargs)
            where = f'iteration {runner.iter + 1}' + (f' (epoch {runner.epoch + 1})' if by_epoch else '')
            if self.action == 'stop' or self.skipped >= self.max_skips:
                raise FloatingPointError(
                    f'non-finite loss at {where} (on this rank: {loss.detach().flatten()[:1].item()}); '
                    'training stopped before the optimizer step, so the weights and checkpoints hold no '
                    "NaN. Lower the lr or enable clip_grad, or use FiniteLossHook(action='skip')"
                    + (f'; {self.skipped} steps were skipped already' if self.skipped else ''))
            self.skipped += 1
            self._skip(optim_wrapper, loss)
            print_log(f'FiniteLossHook: non-finite loss at {where}: skipped '
                      f'({self.skipped} of at most {self.max_skips})', logger='current', level=30)

        optim_wrapper.update_params = checked_update_params
        self._wrapped = optim_wrapper

    @staticmethod
    def _skip(optim_wrapper, loss: torch.Tensor) -> None:
        """The backward of a non-finite loss, counted as an accumulation step (distributed gradient
        hooks see it on every rank alike), whose gradients are then dropped: those accumulated
        before it are put back, or, where it ends the window, the window's are zeroed."""
        ends_window = optim_wrapper.should_sync()
        params = [p for group in optim_wrapper.optimizer.param_groups for p in group['params']]
        kept = None if ends_window else [None if p.grad is None else p.grad.clone() for p in params]
        optim_wrapper.backward(loss)
        if ends_window:
            optim_wrapper.zero_grad()
            return
        for param, grad in zip(params, kept):
            param.grad = grad

    def after_train(self, runner) -> None:
        if self._wrapped is not None:
            del self._wrapped.update_params  # the wrapper's own method again
            self._wrapped = None
