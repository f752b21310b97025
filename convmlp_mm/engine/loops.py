"""Training loops that resume exactly, and a test loop under autocast.

:class:`ResumableEpochBasedTrainLoop` and :class:`ResumableIterBasedTrainLoop` are mmengine's loops
(registered under their own names) that continue a checkpoint saved in the middle of an epoch
(by :class:`~convmlp_mm.engine.hooks.PreemptionHook`, or an iteration-interval
``CheckpointHook``) where it stopped. A run selects them by type::

    train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=12)   # or
    train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=40000)

The epoch-based loop records, before each iteration, where in its epoch the run is (epoch,
batches of the epoch trained, the loader's length and batch size, the world size) in the message
hub, which every checkpoint holds. On resume:

- a checkpoint from an epoch boundary skips nothing (as mmengine);
- a mid-epoch checkpoint with the same loader (length, batch size, world size) draws and
  discards the batches it trained (so data workers replay their augmentations), calls the hook
  method ``after_skip_trained_batches`` (where :class:`~convmlp_mm.engine.hooks.RandomStateHook`
  restores the random state) and trains the rest: the run ends where an uninterrupted one ends;
- a mid-epoch checkpoint with another loader restarts that epoch from its first batch, with one
  warning naming why (mmengine's behaviour); never a ``StopIteration``.

mmengine's ``IterBasedTrainLoop`` draws the trained batches itself (the sampler's indices and the
workers' augmentations of an uninterrupted run, persistent workers or not); the resumable one adds
the same ``after_skip_trained_batches`` call after them.

Both build their training data loader again when a resume changed the run's seed
(:func:`build_loader_again_if_reseeded`): mmengine builds the loader, whose sampler shuffles and
whose workers are seeded from the run's seed, before it loads the checkpoint and takes the
checkpoint's seed, so a config without a seed (the hosts' bases set none: each run draws one)
would otherwise resume on another order of samples and other augmentations.

The epoch-based loop tells an :class:`~convmlp_mm.engine.EpochSeededDataset` the epoch before
each epoch's loader starts. When a run raises, every loop here calls the hook method
``after_run_raised`` before the exception goes on (mmengine calls no hook then), where the
runtime parts take back what they installed (signal handlers, a watchdog thread, patched ops).
"""
from typing import Callable, Iterator, Union

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.logging import print_log
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop, TestLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from mmengine.structures import BaseDataElement
from torch.utils.data import DataLoader

from .dataset import EpochSeededDataset

#: The message hub's runtime-info key of :class:`ResumableEpochBasedTrainLoop`'s position.
POSITION_KEY = 'convmlp_mm.epoch_position'


def run_releasing(loop, run: Callable):
    """``run()``; when it raises, the run's hooks get ``after_run_raised`` first."""
    try:
        return run()
    except BaseException:
        loop.runner.call_hook('after_run_raised')
        raise


def build_loader_again_if_reseeded(loop) -> bool:
    """Builds ``loop.dataloader`` again from its config (``loop.loader_cfg``) when the run's seed is
    no longer the one it was built with (``loop.loader_seed``): a resume took the checkpoint's
    seed after the loop was built. Returns whether it did; a loop given a built loader keeps it."""
    runner = loop.runner
    if loop.loader_cfg is None or runner.seed == loop.loader_seed:
        return False
    print_log(f'resumed from a checkpoint of seed {runner.seed}: the training data loader, built with seed '
              f'{loop.loader_seed}, is built again with it', logger='current')
    loop.dataloader = runner.build_dataloader(loop.loader_cfg, seed=runner.seed,
                                              diff_rank_seed=runner._randomness_cfg.get('diff_rank_seed', False))
    loop.loader_seed = runner.seed
    return True


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` that resumes a mid-epoch checkpoint exactly (see the
    module docstring). The same arguments."""

    #: Batches the next epoch draws and discards before it trains (set when training starts).
    batches_to_skip = 0

    def __init__(self, runner, dataloader: Union[DataLoader, dict], **kwargs) -> None:
        super().__init__(runner, dataloader, **kwargs)
        self.loader_seed, self.loader_cfg = runner.seed, dataloader if isinstance(dataloader, dict) else None

    def _loader_shape(self) -> dict:
        return dict(length=len(self.dataloader), batch_size=self.dataloader.batch_size,
                    world_size=get_world_size())

    def _resumed_position(self) -> int:
        """How many batches of the current epoch a resumed checkpoint trained; 0 at an epoch
        boundary (a checkpoint of the epoch's end hooks, which count the epoch as done), without a
        recorded position, or when the loader differs (with a warning). A checkpoint saved after
        the epoch's last batch but before its end hooks (a preemption's) trained all of them: the
        resumed epoch skips them all and runs the end hooks only."""
        position = self.runner.message_hub.get_info(POSITION_KEY)
        if not position or position['epoch'] != self._epoch:
            return 0
        shape = self._loader_shape()
        saved = {key: position.get(key) for key in shape}
        if saved != shape:
            differs = ', '.join(f'{key} {saved[key]} -> {shape[key]}' for key in shape if saved[key] != shape[key])
            print_log(f'resumed from a checkpoint saved after batch {position["batches"]} of epoch '
                      f'{self._epoch + 1}, whose data loader differs from this run\'s ({differs}): epoch '
                      f'{self._epoch + 1} restarts from its first batch', logger='current', level=30)
            return 0
        return position['batches']

    def run(self) -> torch.nn.Module:
        build_loader_again_if_reseeded(self)
        self.batches_to_skip = self._resumed_position()
        return run_releasing(self, super().run)

    def run_epoch(self) -> None:
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        skip, self.batches_to_skip = self.batches_to_skip, 0
        if isinstance(self.dataloader.dataset, EpochSeededDataset):
            self.dataloader.dataset.set_epoch(self._epoch, self.runner.seed, get_rank())
        batches = iter(self.dataloader)
        if skip:
            print_log(f'resumed in the middle of epoch {self._epoch + 1}: skipping its {skip} trained batches',
                      logger='current')
            for _ in range(skip):
                next(batches)
            self.runner.call_hook('after_skip_trained_batches')
        for idx, data_batch in enumerate(batches, start=skip):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def run_iter(self, idx: int, data_batch) -> None:
        # recorded first: a checkpoint saved in this iteration's hooks has trained idx + 1 batches
        self.runner.message_hub.update_info(POSITION_KEY, dict(epoch=self._epoch, batches=idx + 1,
                                                               **self._loader_shape()))
        super().run_iter(idx, data_batch)


class _CallAfterSkip:
    """The data iterator of a resumed ``IterBasedTrainLoop``: calls ``callback`` once, just before
    the first batch after the ``skip`` ones the loop discards."""

    def __init__(self, batches: Iterator, skip: int, callback: Callable[[], None]) -> None:
        self.batches, self.left, self.callback = batches, skip, callback

    def __iter__(self) -> '_CallAfterSkip':
        return self

    def __next__(self):
        if self.left == 0:
            self.callback()
        self.left -= 1
        return next(self.batches)


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop`` calling the hook method ``after_skip_trained_batches``
    after a resumed run has drawn the batches its checkpoint trained, with its data loader built
    with the checkpoint's seed (see the module docstring). The same arguments."""

    batches_to_skip = 0

    def __init__(self, runner, dataloader: Union[DataLoader, dict], **kwargs) -> None:
        super().__init__(runner, dataloader, **kwargs)
        self.loader_seed, self.loader_cfg = runner.seed, dataloader if isinstance(dataloader, dict) else None

    def run(self) -> None:
        if build_loader_again_if_reseeded(self):
            self.dataloader_iterator = _InfiniteDataloaderIterator(self.dataloader)
        self.batches_to_skip = self._iter
        if self._iter > 0:
            self.dataloader_iterator = _CallAfterSkip(self.dataloader_iterator, self._iter,
                                                      lambda: self.runner.call_hook('after_skip_trained_batches'))
        return run_releasing(self, super().run)


# ------------------------------------------------------------------------------- testing
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

    def run(self) -> dict:
        return run_releasing(self, super().run)

    def run_iter(self, idx, data_batch) -> None:
        model = self.runner.model
        test_step = model.test_step
        model.test_step = lambda data: half_to_float(test_step(data))
        try:
            super().run_iter(idx, data_batch)
        finally:
            del model.test_step  # the class's method again
