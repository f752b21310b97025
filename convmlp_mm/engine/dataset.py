"""Data-loader workers whose random streams are seeded per epoch: :class:`EpochSeededDataset`.

mmengine seeds each worker once, when it starts, from the seed, the rank and the worker id. With
``persistent_workers=False`` every epoch's workers therefore draw the same augmentations; with
``persistent_workers=True`` the streams go on across epochs, and a resumed run's new workers
start them again, so a resumed epoch does not replay its augmentations. Here every worker
reseeds when it loads its first sample of an epoch, from the seed, the rank, the worker id and
the epoch: fresh streams each epoch, and the same ones again when that epoch is resumed, with
persistent workers or not. The epoch reaches persistent workers through a shared array that
:meth:`EpochSeededDataset.set_epoch` writes (:class:`~convmlp_mm.engine.ResumableEpochBasedTrainLoop`
calls it before each epoch's loader starts). With ``num_workers=0`` the samples are drawn in the
training process, whose random state :class:`~convmlp_mm.engine.hooks.RandomStateHook` restores.

In a config (``tools/train.py`` selects it for epoch-based training with data workers)::

    train_dataloader = dict(dataset=dict(type='EpochSeededDataset', dataset=dict(type='CocoDataset', ...)))
"""
import multiprocessing
import random
from typing import Any, Union

import numpy as np
import torch
from mmengine.registry import DATASETS
from torch.utils.data import Dataset, get_worker_info


@DATASETS.register_module()
class EpochSeededDataset(Dataset):
    """``dataset`` as it is, sample for sample (its attributes too: ``metainfo``, ...), with each
    data-loader worker reseeded at its first sample of an epoch (see the module docstring).

    Args:
        dataset (Dataset or dict): The dataset, or its config (built in the current scope).
    """

    def __init__(self, dataset: Union[Dataset, dict]) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self._shared = multiprocessing.Array('q', 3, lock=False)  # epoch, seed, rank
        self._seeded = None  # in a worker: the (epoch, seed, rank) it reseeded for

    def set_epoch(self, epoch: int, seed: int, rank: int) -> None:
        """The epoch the loader's next samples belong to (before its iterator starts)."""
        self._shared[:] = [epoch, seed, rank]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        worker = get_worker_info()
        if worker is not None and self._seeded != tuple(self._shared):
            self._seeded = tuple(self._shared)
            epoch, seed, rank = self._seeded
            state = np.random.SeedSequence([seed % 2**63, rank, worker.id, epoch]).generate_state(2)
            random.seed(int(state[0]))
            np.random.seed(int(state[0]))
            torch.manual_seed(int(state[0]) << 32 | int(state[1]))
        return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        if name == 'dataset':  # not set yet (while unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)
