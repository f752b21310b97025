"""Every compatibility shim of convmlp_mm and every feature detection, in one place, applied once
when the package is imported.

Supported range (README, "Supported versions"): torch 2.1 to 2.14, numpy 1.26 and 2.x,
mmengine 0.10.x, mmcv 2.1. Version-dependent behaviour is detected here, never elsewhere:

- :func:`is_autocast_enabled` -- ``torch.is_autocast_enabled(device_type)`` exists since
  torch 2.4; before, CPU autocast had ``torch.is_autocast_cpu_enabled()`` and the argument-free
  call meant CUDA.
- :data:`CPU_AUTOCAST_DTYPES` -- CPU autocast takes float16 too since torch 2.2 (torch 2.1:
  "AutocastCPU only support Bfloat16"); found by trying it.
- :data:`HAS_SAFE_GLOBALS_BY_NAME` -- ``torch.serialization.safe_globals`` with ``(object,
  'module.name')`` entries (torch 2.6 and later); before, :mod:`convmlp_mm.checkpoint` passes a
  restricted unpickler as ``torch.load``'s ``pickle_module``.
- :data:`NUMPY_CORE` -- numpy 2 moved ``numpy.core`` to ``numpy._core`` (the old name warns).
- :func:`disabled_grad_scaler` -- ``torch.amp.GradScaler`` exists since torch 2.3; before, only
  ``torch.cuda.amp.GradScaler``.
- :data:`CPU_NATIVE_BF16` -- whether this CPU runs bfloat16 matrix products natively (oneDNN's
  check: AVX512-BF16 or AMX). Without them, bfloat16 convolutions and matrix products fall back
  to reference loops, 10-300x slower than float32 (measured on an AVX2 CPU), so the tools warn
  before they run bfloat16 there.
- :func:`onnx_export_kwargs` -- ``torch.onnx.export`` takes ``dynamo`` since torch 2.5 and
  defaults it to True since 2.9; we export with the TorchScript-based exporter on every torch
  (``dynamic_axes``, no onnxscript needed).

The shims: the pinned stack's mmengine 0.10.7 assumes CUDA (shims 2-5 apply only on a machine
without CUDA), and its checkpoint writes are not safe against kills (shim 6, on every version).
Its checkpoint reads (a plain ``torch.load``: any pickle runs on torch < 2.6, and mmengine's own
checkpoints are refused on torch >= 2.6) are replaced on every version by
:mod:`convmlp_mm.checkpoint` (weights-only loading with an allowlist, errors naming the file),
which takes the place of shims 1 and 7. Each shim below names the upstream symbol it replaces,
why, and where it applies; none edits an installed file, and none needs an environment
variable. Each is covered by a test (``tests/test_compat.py``, ``tests/test_reliability.py``,
``tests/test_cluster.py``) that fails without it, skipped with its reason where the shim does
not apply.

1. (:mod:`convmlp_mm.checkpoint`) every ``CheckpointLoader`` scheme reads weights-only.
2. ``mmengine.dist.utils._init_dist_pytorch`` (``launcher='pytorch'``) calls
   ``torch.cuda.set_device`` and uses the config's backend (``nccl``). Without a GPU we
   initialise the ``gloo`` backend and skip ``set_device``, so ``tools/dist_train.sh`` runs
   N CPU processes.
3. ``mmengine.model.MMDistributedDataParallel``: ``Runner.wrap_model`` passes
   ``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU module. We drop ``device_ids`` and
   ``output_device`` when the module lives on the CPU.
4. ``SyncBN`` (mmcv's registration of ``torch.nn.SyncBatchNorm`` in mmengine's ``MODELS``):
   DDP refuses ``SyncBatchNorm`` in a CPU module, and the mmseg configs use it. On a machine
   without CUDA we register, in its place, a BatchNorm with per-process statistics and the
   same parameter names. With CUDA nothing changes.
5. ``mmengine.optim.AmpOptimWrapper`` asserts that CUDA is available. Without CUDA we register
   a subclass that autocasts to bfloat16 on the CPU, without loss scaling (bfloat16 has
   float32's range), so ``tools/train.py --amp`` runs everywhere.
6. ``mmengine.fileio.LocalBackend.put``/``put_text`` (how checkpoints are written) open the
   destination and write into it, so a job killed while saving, or a full disk, leaves a
   truncated checkpoint under its final name. Ours write a temporary file in the same folder,
   flush it to disk and rename it over the destination: a checkpoint file is complete or
   absent. (A leftover ``.NAME.partial-PID`` file marks an interrupted write.)
7. (:mod:`convmlp_mm.checkpoint`) ``CheckpointLoader.load_checkpoint`` raises
   :class:`~convmlp_mm.checkpoint.CheckpointError` naming the file, the cause and what was
   expected.
8. ``mmengine.dist.utils._init_dist_slurm`` (``launcher='slurm'``) calls
   ``torch.cuda.set_device`` (and, without ``SLURM_LOCALID``, takes the rank modulo the GPU
   count), so it cannot run without a GPU, and every job on a node takes port 29500 unless
   ``MASTER_PORT`` is set. Ours: without CUDA it sets the same variables (``RANK``,
   ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` = the first host of the job) and initialises
   ``gloo`` with as many threads as Slurm gave the task (``SLURM_CPUS_PER_TASK``); with CUDA it
   calls mmengine's. On every machine a job without ``MASTER_PORT`` gets a port derived from its
   job id (20000-29999), so two jobs sharing a node do not collide.
9. ``mmengine.runner.EpochBasedTrainLoop.run_epoch``: a checkpoint saved in the middle of an
   epoch (by :class:`~convmlp_mm.hooks.PreemptionHook`) resumes at the start of that epoch,
   training its first batches twice. Ours draws and discards the batches the checkpoint has
   trained (so data workers replay their augmentations), then calls the hook method
   ``after_skip_trained_batches`` and trains the rest. ``IterBasedTrainLoop.run`` skips the
   trained batches itself; ours only adds the same hook call after them. There
   :class:`~convmlp_mm.hooks.RandomStateHook` restores the random state, because drawing the
   skipped batches consumes random numbers (augmentations without workers, new data loader
   iterators). Resuming from an epoch boundary is unchanged. On every version.
10. ``mmcv.ops.roi_align.roi_align`` (Mask R-CNN's RoI extractors) reads its input's memory as
    contiguous NCHW without checking: a channels-last feature map (a model after
    :func:`convmlp_mm.prepare_inference`) gave wrong RoI features (max difference 0.83 on
    uniform input), and its CPU kernel has no bfloat16 (``"ROIAlign_forward" not implemented
    for 'BFloat16'`` under CPU autocast). Ours passes it a contiguous NCHW input, in float32 on
    the CPU for half types (the result is cast back). Likewise ``mmcv.ops.nms.NMSop`` (every
    detector's NMS) on the CPU takes float32 boxes and scores only (``expected scalar type
    Float but found BFloat16``): ours casts them. On every version.
"""
import importlib
import logging
import os
import os.path as osp
import subprocess
import warnings
from typing import Optional

import mmcv.cnn  # noqa: F401  (registers mmcv's SyncBN first, so that ours below replaces it)
import numpy as np
import torch
from mmengine.dist import utils as dist_utils
from mmengine.fileio import LocalBackend
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import AmpOptimWrapper as _AmpOptimWrapper
from mmengine.optim import OptimWrapper
from mmengine.logging import print_log
from mmengine.registry import MODELS, OPTIM_WRAPPERS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from torch.nn.modules.batchnorm import _BatchNorm


def _torch_version() -> tuple:
    """``(major, minor)`` of the installed torch (``'2.1.2+cu121'`` -> ``(2, 1)``)."""
    return tuple(int(part) for part in torch.__version__.split('+')[0].split('.')[:2])


TORCH_VERSION = _torch_version()


# feature detection ---------------------------------------------------------------------------
def _device_autocast_query() -> bool:
    try:
        torch.is_autocast_enabled('cpu')
        return True
    except TypeError:  # torch < 2.4: no device argument
        return False


_HAS_DEVICE_AUTOCAST_QUERY = _device_autocast_query()


def is_autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``'cpu'``, ``'cuda'``, ...), on every torch;
    False for device types autocast does not know (``'meta'``, where timm builds models)."""
    if device_type == 'meta':
        return False
    if _HAS_DEVICE_AUTOCAST_QUERY:
        return torch.is_autocast_enabled(device_type)
    if device_type == 'cpu':
        return torch.is_autocast_cpu_enabled()
    if device_type == 'cuda':
        return torch.is_autocast_enabled()
    return False


def _cpu_autocast_dtypes() -> tuple:
    dtypes = []
    for dtype in (torch.bfloat16, torch.float16):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('error')  # torch 2.1 warns and disables instead of raising
                with torch.autocast('cpu', dtype=dtype):
                    pass
            dtypes.append(dtype)
        except (RuntimeError, UserWarning):
            pass
    return tuple(dtypes)


CPU_AUTOCAST_DTYPES = _cpu_autocast_dtypes()


def _safe_globals_by_name() -> bool:
    if not hasattr(torch.serialization, 'safe_globals'):
        return False
    from torch import _weights_only_unpickler
    probe = (_safe_globals_by_name, 'convmlp_mm.compat.probe')
    with torch.serialization.safe_globals([probe]):
        return _weights_only_unpickler._get_user_allowed_globals().get(probe[1]) is probe[0]


HAS_SAFE_GLOBALS_BY_NAME = _safe_globals_by_name()


def _cpu_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


CPU_NATIVE_BF16 = _cpu_native_bf16()


def emulated_bf16_warning() -> Optional[str]:
    """A warning to print before bfloat16 runs on this machine's CPU, or None where the CPU has
    native bfloat16 (or a GPU will run it)."""
    if CPU_NATIVE_BF16 or torch.cuda.is_available():
        return None
    capability = getattr(getattr(torch.backends, 'cpu', None), 'get_cpu_capability', lambda: 'unknown')()
    return (f'bfloat16 on this CPU ({capability}, no AVX512-BF16/AMX) runs in reference loops, not oneDNN: '
            'expect it to be 10x or more slower than float32; drop --amp (or use OptimWrapper) for speed')


def onnx_export_kwargs() -> dict:
    """Extra ``torch.onnx.export`` arguments that select the TorchScript-based exporter."""
    import inspect
    return dict(dynamo=False) if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}
NUMPY_CORE = 'numpy._core' if int(np.__version__.split('.')[0]) >= 2 else 'numpy.core'


def disabled_grad_scaler():
    """A disabled ``GradScaler`` (``torch.amp`` since torch 2.3, ``torch.cuda.amp`` before)."""
    if hasattr(torch.amp, 'GradScaler'):
        return torch.amp.GradScaler('cpu', enabled=False)
    return torch.cuda.amp.GradScaler(enabled=False)


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


# 4. SyncBN without a GPU ---------------------------------------------------------------------
class CPUSyncBatchNorm(_BatchNorm):
    """What ``SyncBN`` builds on a machine without CUDA: per-process BatchNorm over any input of
    two or more dimensions, with SyncBatchNorm's parameter names (checkpoints carry over)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f'expected at least 2D input (got {input.dim()}D input)')


if not torch.cuda.is_available():
    MODELS.register_module('SyncBN', module=CPUSyncBatchNorm, force=True)


# 5. AMP without CUDA ---------------------------------------------------------------------------
class AmpOptimWrapper(_AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper``; without CUDA, bfloat16 autocast on the CPU, no loss scaling."""

    def __init__(self, loss_scale='dynamic', dtype=None, use_fsdp: bool = False, **kwargs) -> None:
        if torch.cuda.is_available():
            super().__init__(loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
            return
        if dtype not in (None, 'bfloat16', torch.bfloat16):
            raise ValueError(f'AmpOptimWrapper(dtype={dtype!r}) on the CPU: only bfloat16 is supported')
        OptimWrapper.__init__(self, **kwargs)
        if emulated_bf16_warning():
            print_log(f'AmpOptimWrapper: {emulated_bf16_warning()}', logger='current', level=logging.WARNING)
        self._scale_update_param = None
        self.loss_scaler = disabled_grad_scaler()
        self.cast_dtype = torch.bfloat16

    def load_state_dict(self, state_dict: dict) -> None:
        if not self.loss_scaler.is_enabled():  # a CUDA run's scaler state means nothing here
            state_dict.pop('loss_scaler', None)
        super().load_state_dict(state_dict)


OPTIM_WRAPPERS.register_module('AmpOptimWrapper', module=AmpOptimWrapper, force=True)


# 6. atomic checkpoint writes ---------------------------------------------------------------------
def write_atomically(filepath: str, data, mode: str, **open_kwargs) -> None:
    """Writes ``data`` to ``filepath`` through a temporary file renamed over it when complete."""
    filepath = str(filepath)
    folder, name = osp.split(osp.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    partial = osp.join(folder, f'.{name}.partial-{os.getpid()}')
    try:
        with open(partial, mode, **open_kwargs) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, filepath)
    except BaseException:
        if osp.exists(partial):
            os.remove(partial)
        raise


def put(self, obj: bytes, filepath) -> None:
    """``LocalBackend.put``, atomic."""
    write_atomically(filepath, obj, 'wb')


def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
    """``LocalBackend.put_text``, atomic."""
    write_atomically(filepath, obj, 'w', encoding=encoding)


LocalBackend.put = put
LocalBackend.put_text = put_text


# 8. Slurm launch without a GPU -----------------------------------------------------------------
_init_dist_slurm = dist_utils._init_dist_slurm


def slurm_job_port(job_id: str) -> int:
    """The rendezvous port of Slurm job ``job_id`` when ``MASTER_PORT`` is not set."""
    return 20000 + int(job_id) % 10000


def init_dist_slurm(backend: str, port=None, init_backend: str = 'torch', **kwargs) -> None:
    """``_init_dist_slurm`` with a per-job default port, and gloo (no ``set_device``) without CUDA."""
    if port is None and 'MASTER_PORT' not in os.environ and os.environ.get('SLURM_JOB_ID', '').isdigit():
        port = slurm_job_port(os.environ['SLURM_JOB_ID'])
    if torch.cuda.is_available():
        return _init_dist_slurm(backend, port=port, init_backend=init_backend, **kwargs)
    if init_backend != 'torch':
        raise ValueError(f"launcher='slurm' without a GPU: init_backend={init_backend!r} is not supported, only 'torch'")
    first_host = subprocess.run(['scontrol', 'show', 'hostnames', os.environ['SLURM_NODELIST']],
                                capture_output=True, text=True, check=True).stdout.split()[0]
    os.environ.setdefault('MASTER_ADDR', first_host)
    os.environ['MASTER_PORT'] = str(port or os.environ.get('MASTER_PORT', 29500))
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    if os.environ.get('SLURM_CPUS_PER_TASK', '').isdigit():
        torch.set_num_threads(int(os.environ['SLURM_CPUS_PER_TASK']))
    torch.distributed.init_process_group(backend='gloo', **kwargs)


dist_utils._init_dist_slurm = init_dist_slurm


# 9. resuming in the middle of an epoch ---------------------------------------------------------
def trained_batches_to_skip(loop) -> int:
    """How many batches a resumed training loop draws and discards before it trains: those of
    the current epoch the checkpoint trained (``IterBasedTrainLoop``: all it trained)."""
    if isinstance(loop, EpochBasedTrainLoop):
        return loop.iter - loop.epoch * len(loop.dataloader)
    if isinstance(loop, IterBasedTrainLoop):
        return loop.iter
    return 0


def run_epoch(self) -> None:
    """``EpochBasedTrainLoop.run_epoch`` that skips the batches a mid-epoch checkpoint trained."""
    self.runner.call_hook('before_train_epoch')
    self.runner.model.train()
    trained = trained_batches_to_skip(self)  # > 0 only after a mid-epoch resume
    batches = iter(self.dataloader)
    if trained > 0:
        print_log(f'resumed in the middle of epoch {self._epoch + 1}: skipping its {trained} trained batches',
                  logger='current')
        for _ in range(trained):
            next(batches)
        self.runner.call_hook('after_skip_trained_batches')
    for idx, data_batch in enumerate(batches, start=max(trained, 0)):
        self.run_iter(idx, data_batch)
    self.runner.call_hook('after_train_epoch')
    self._epoch += 1


EpochBasedTrainLoop.run_epoch = run_epoch


class _CallAfterSkip:
    """The data iterator of a resumed ``IterBasedTrainLoop``: calls ``callback`` once, just before
    the first batch after the ``skip`` ones the loop discards."""

    def __init__(self, batches, skip: int, callback) -> None:
        self.batches, self.left, self.callback = batches, skip, callback

    def __iter__(self):
        return self

    def __next__(self):
        if self.left == 0:
            self.callback()
        self.left -= 1
        return next(self.batches)


_iter_based_run = IterBasedTrainLoop.run


def iter_based_run(self):
    """``IterBasedTrainLoop.run`` calling ``after_skip_trained_batches`` after its skip."""
    if self._iter > 0:
        self.dataloader_iterator = _CallAfterSkip(self.dataloader_iterator, self._iter,
                                                  lambda: self.runner.call_hook('after_skip_trained_batches'))
    return _iter_based_run(self)


IterBasedTrainLoop.run = iter_based_run


# 10. RoIAlign and NMS of channels-last and bfloat16 features----------------------------------------
_ROI_ALIGN = importlib.import_module('mmcv.ops.roi_align')  # the module: mmcv.ops.roi_align is its function
_roi_align = _ROI_ALIGN.roi_align


def roi_align(input: torch.Tensor, rois: torch.Tensor, *args):
    """mmcv's ``roi_align`` on a contiguous NCHW input; float32 on the CPU for half types."""
    if input.device.type == 'cpu' and input.dtype in (torch.bfloat16, torch.float16):
        return _roi_align(input.float().contiguous(), rois.float(), *args).to(input.dtype)
    return _roi_align(input.contiguous(), rois, *args)


_ROI_ALIGN.roi_align = roi_align
_NMS = importlib.import_module('mmcv.ops.nms')
_nms_forward = _NMS.NMSop.forward


def nms_forward(ctx, bboxes: torch.Tensor, scores: torch.Tensor, *args) -> torch.Tensor:
    """``NMSop.forward`` with float32 boxes and scores on the CPU."""
    if bboxes.device.type == 'cpu':
        bboxes, scores = bboxes.float(), scores.float()
    return _nms_forward(ctx, bboxes, scores, *args)


_NMS.NMSop.forward = staticmethod(nms_forward)
