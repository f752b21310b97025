"""Distributed runs where the device is the CPU: the process group and the model wrapper.

mmengine 0.10 assumes an accelerator for ``launcher='pytorch'`` and ``'slurm'``: its
``init_dist`` calls ``torch.cuda.set_device`` and uses the config's backend (``nccl``), and
``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU module;
DDP also refuses ``SyncBatchNorm`` in a CPU module, and the mmseg configs use it.

- :func:`init_cpu_process_group` starts the process group with ``gloo`` (no ``set_device``)
  where the run's device (mmengine's ``get_device()``) is the CPU, before the ``Runner`` is
  built, so that mmengine finds it started; on a GPU/NPU/MLU/MUSA machine it does nothing and
  mmengine's own ``init_dist`` runs. ``tools/train.py`` and ``tools/test.py`` call it.
- :class:`CPUDistributedDataParallel` (``model_wrapper_cfg=dict(type='CPUDistributedDataParallel')``)
  is ``MMDistributedDataParallel`` with mmengine's default ``broadcast_buffers=False``; for a
  module on the CPU it drops ``device_ids``/``output_device`` and turns ``SyncBatchNorm`` into
  per-process BatchNorm (mmengine's ``revert_sync_batchnorm``, the same parameter names); and
  it keeps DDP's gradient buckets as they are built (``fixed_buckets``). DDP rebuilds its buckets
  in the order the gradients became ready in a run's first iteration, and gloo's ring all-reduce
  adds the ranks' values in an order that depends on an element's position in its bucket (with
  three ranks or more), so a resumed run, whose first iteration is the uninterrupted run's k-th,
  would sum that iteration's gradients in another order: equal up to rounding, not bit-identical
  (measured with 4 and 8 ranks; 1 and 2 ranks are not affected).
"""
import os
import subprocess

import torch
import torch.nn as nn
from mmengine.device import get_device
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS


def init_cpu_process_group(launcher: str) -> bool:
    """Starts a ``gloo`` process group for ``launcher`` (``'pytorch'``: torchrun's variables;
    ``'slurm'``: Slurm's, turned into ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``
    as mmengine does, with ``SLURM_CPUS_PER_TASK`` threads) where the device is the CPU.
    Returns whether it did; False for ``'none'``/``'mpi'``, an accelerator, or a started group.

    Raises:
        ValueError: ``'slurm'`` outside a Slurm job step.
    """
    if launcher not in ('pytorch', 'slurm') or get_device() != 'cpu' or torch.distributed.is_initialized():
        return False
    if launcher == 'slurm':
        missing = [k for k in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST') if k not in os.environ]
        if missing:
            raise ValueError(f"launcher='slurm': {', '.join(missing)} not set; expected a process started by srun "
                             '(tools/slurm_train.sh, tools/slurm_test.sh)')
        first_host = subprocess.run(['scontrol', 'show', 'hostnames', os.environ['SLURM_NODELIST']],
                                    capture_output=True, text=True, check=True).stdout.split()[0]
        os.environ.setdefault('MASTER_ADDR', first_host)
        os.environ.setdefault('MASTER_PORT', '29500')
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
        if os.environ.get('SLURM_CPUS_PER_TASK', '').isdigit():
            torch.set_num_threads(int(os.environ['SLURM_CPUS_PER_TASK']))
    torch.distributed.init_process_group(backend='gloo')
    return True


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that also wraps CPU modules (see the module docstring).

    Args:
        module (nn.Module): The model.
        detect_anomalous_params (bool): As ``MMDistributedDataParallel``'s.
        broadcast_buffers (bool): As DDP's; defaults to False, as mmengine's default wrapper.
        find_unused_parameters (bool): As DDP's.
        fixed_buckets (bool): Keep the bucket layout DDP builds at the start for the whole run, so
            that a resumed run reduces gradients exactly as an uninterrupted one. DDP rebuilds its
            buckets after the first iteration unless it looks for unused parameters, so this passes
            ``find_unused_parameters=True`` to DDP: one traversal of the autograd graph per
            iteration and a small all-reduce of the used-parameter map overlapped with the
            backward (no difference measurable here), and torch's warning, once per rank, that no
            unused parameters were found. Defaults to True.
        **kwargs: DDP's other arguments (``device_ids`` and ``output_device`` are dropped for a
            CPU module).
    """

    def __init__(self, module: nn.Module, detect_anomalous_params: bool = False, broadcast_buffers: bool = False,
                 find_unused_parameters: bool = False, fixed_buckets: bool = True, **kwargs) -> None:
        if all(p.device.type == 'cpu' for p in module.parameters()):
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
            module = revert_sync_batchnorm(module)
        super().__init__(module, detect_anomalous_params=detect_anomalous_params,
                         broadcast_buffers=broadcast_buffers,
                         find_unused_parameters=find_unused_parameters or fixed_buckets, **kwargs)
