"""Non-finite losses never reach the weights."""
import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop


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
