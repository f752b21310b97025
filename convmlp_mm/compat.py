"""Every compatibility shim of convmlp_mm, in one place, applied once when the package is imported.

The pinned stack (torch 2.13, numpy 2, mmengine 0.10.7, mmcv 2.1.0, mmdet 3.3.0, mmseg 1.2.2,
mmpretrain 1.2.0) predates some torch changes. Each shim below names the upstream symbol it
replaces and why; none edits an installed file, and none needs an environment variable.
Each is covered by a test in ``tests/test_compat.py`` that fails without it.

1. ``mmengine.runner.checkpoint.load_from_local`` (the ``CheckpointLoader`` scheme ``''``)
   calls ``torch.load(filename)``. Since torch 2.6 that means ``weights_only=True``, which
   rejects mmengine's own checkpoints (numpy arrays and ``HistoryBuffer`` in ``message_hub``
   and ``meta``): resume, ``load_from``, testing a checkpoint and ``init_cfg`` files fail.
   We register a local loader that passes ``weights_only=False`` -- local files are
   trusted as they were by mmengine before torch 2.6. ``load_checkpoint``, ``Runner.resume``
   and ``Runner.load_checkpoint`` all go through this scheme.
2. ``mmengine.dist.utils._init_dist_pytorch`` (``launcher='pytorch'``) calls
   ``torch.cuda.set_device`` and uses the config's backend (``nccl``). Without a GPU we
   initialise the ``gloo`` backend and skip ``set_device``, so ``tools/dist_train.sh`` runs
   N CPU processes.
3. ``mmengine.model.MMDistributedDataParallel``: ``Runner.wrap_model`` passes
   ``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU module. We drop ``device_ids`` and
   ``output_device`` when the module lives on the CPU.
4. ``SyncBN`` (mmcv's registration of ``torch.nn.SyncBatchNorm`` in mmengine's ``MODELS``)
   raises in CPU DDP (gloo cannot synchronise its statistics). We register a subclass that
   behaves as plain BatchNorm on CPU tensors (per-process statistics) and as SyncBatchNorm
   on GPUs, with the same parameter names.
"""
import os.path as osp

import mmcv.cnn  # noqa: F401  (registers mmcv's SyncBN first, so that ours below replaces it)
import torch
import torch.nn.functional as F
from mmengine.dist import utils as dist_utils
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import CheckpointLoader


# 1. checkpoints -------------------------------------------------------------------------
def load_from_local(filename: str, map_location=None):
    """mmengine's local checkpoint loader, with ``weights_only=False`` made explicit."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)


# 2. distributed launch without a GPU -------------------------------------------------------
_init_dist_pytorch = dist_utils._init_dist_pytorch


def init_dist_pytorch(backend: str, init_backend: str = 'torch', **kwargs) -> None:
    """``_init_dist_pytorch`` that falls back to gloo (and no ``set_device``) without CUDA."""
    if torch.cuda.is_available():
        return _init_dist_pytorch(backend, init_backend=init_backend, **kwargs)
    torch.distributed.init_process_group(backend='gloo', **kwargs)


dist_utils._init_dist_pytorch = init_dist_pytorch


# 3. DDP of a CPU model ---------------------------------------------------------------------
_ddp_init = MMDistributedDataParallel.__init__


def ddp_init(self, module: torch.nn.Module, detect_anomalous_params: bool = False, **kwargs) -> None:
    """``MMDistributedDataParallel.__init__`` without ``device_ids`` for CPU modules."""
    if all(p.device.type == 'cpu' for p in module.parameters()):
        kwargs.pop('device_ids', None)
        kwargs.pop('output_device', None)
    _ddp_init(self, module, detect_anomalous_params=detect_anomalous_params, **kwargs)


MMDistributedDataParallel.__init__ = ddp_init


# 4. SyncBN on CPU -----------------------------------------------------------------------------
class SyncBatchNorm(torch.nn.SyncBatchNorm):
    """``torch.nn.SyncBatchNorm`` that computes per-process BatchNorm on CPU tensors."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.device.type != 'cpu':
            return super().forward(input)
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                            use_batch_stats, 0.0 if momentum is None else momentum, self.eps)


MODELS.register_module('SyncBN', module=SyncBatchNorm, force=True)
