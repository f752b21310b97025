"""The entry points' helpers (``tools/``): reading a config, choosing the runtime parts of
:mod:`convmlp_mm.engine` for the run (:func:`use_runtime_parts`), finding a checkpoint to resume."""
import ctypes
import ctypes.util
import glob
import logging
import os
import os.path as osp
import re
import sys
from typing import List, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from .data.checks import DatasetError, check_datasets
from .engine.checkpoint import trust_checkpoints
from .engine.hooks import DEFAULT_STALL_TIMEOUT
from .models.weights import check_state_dict_fits, unwrap_state_dict

#: The libraries a config can belong to (its ``default_scope``).
SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Lets the CPU allocator reuse freed activation memory, as PyTorch's CUDA caching allocator
    does on a GPU. Called by the tools in ``tools/``; call it in your own scripts for the same
    effect. Process-wide; a no-op (returning False) where the C library is not glibc.

    glibc serves every block above 32 MiB with a fresh ``mmap`` and returns it to the system
    when freed, so a large activation (a 1-2 megapixel image gives many) is page-faulted and
    zeroed again on every pass: measured here, time per megapixel of the ConvMLP-S forward
    rose by about 25% from 0.5 to 2 megapixels. Raising the mmap and trim thresholds to
    ``limit_bytes`` keeps up to that much freed memory in the process for reuse; the cost
    becomes linear in pixels again.

    Args:
        limit_bytes (int): Blocks up to this size come from the reusable heap, and up to this
            much free memory is kept at its top.
    """
    name = ctypes.util.find_library('c')
    libc = ctypes.CDLL(name) if name else None
    mallopt = getattr(libc, 'mallopt', None)
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, limit_bytes)) and bool(mallopt(m_trim_threshold, limit_bytes))


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``tools/train.py --resume`` continues from: the one named in the work dir's
    ``last_checkpoint`` file, or, when that file is missing, empty or names a file that is gone
    (a job killed while writing it), the newest ``*.pth`` in the work dir. None if there is none.
    Checkpoint files themselves are written atomically (:class:`~convmlp_mm.engine.AtomicLocalBackend`)."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            return named
    candidates = glob.glob(osp.join(work_dir, '*.pth'))  # not the hidden .NAME.partial-PID files
    return max(candidates, key=osp.getmtime) if candidates else None


class CheckpointFitsHook(Hook):
    """Registered by ``tools/train.py`` when it resumes and by ``tools/test.py``. mmengine loads
    with ``strict=False`` (missing and unexpected keys only logged); a resumed run must continue
    the same model and a test must evaluate the checkpoint's weights, so the checkpoint mmengine
    has just read must fit the model (unwrapped from DDP) exactly, or :class:`CheckpointError`
    (keys, both shapes) stops the run before any weight is loaded.

    Args:
        filename (str): The checkpoint, for the message.
    """
    priority = 'VERY_HIGH'

    def __init__(self, filename: str) -> None:
        self.filename = filename

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        check_state_dict_fits(model, unwrap_state_dict(checkpoint, self.filename), self.filename)


def finish_distributed(code: int = 0) -> None:
    """Ends a distributed run's process once its work is done (``tools/train.py``, ``test.py``):
    destroys the process group, flushes the logs and standard streams, and leaves with
    ``os._exit(code)``, skipping interpreter finalization. There, native threads of the distributed
    stack were seen to abort a finished rank ("terminate called without an active exception",
    about 1 run in 10 of 2 CPU processes, with or without destroying the process group), which
    fails the whole torchrun job. Does nothing outside a distributed run."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    torch.distributed.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def check_scope(cfg: Config, filename: str) -> str:
    """The config's ``default_scope``, which decides which library builds it.

    Raises:
        ValueError: the config names no scope of ours.
    """
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'{filename}: default_scope={scope!r} is not one of {SCOPES}; '
                         "inherit an mmdet::, mmseg:: or mmpretrain:: base config")
    return scope


def enable_amp(cfg: Config) -> None:
    """Switches the config's optimizer wrapper to mixed precision
    (:class:`~convmlp_mm.engine.CPUAmpOptimWrapper`: mmengine's ``AmpOptimWrapper`` on
    accelerators, bfloat16 on the CPU).

    Raises:
        ValueError: the config's wrapper is neither ``OptimWrapper`` nor an AMP wrapper.
    """
    wrapper = cfg.optim_wrapper
    if wrapper.get('type') in ('AmpOptimWrapper', 'CPUAmpOptimWrapper'):
        return
    if wrapper.get('type', 'OptimWrapper') != 'OptimWrapper':
        raise ValueError(f"--amp needs optim_wrapper.type='OptimWrapper', not {wrapper.type!r}")
    wrapper.update(type='CPUAmpOptimWrapper', loss_scale='dynamic')


def trust_from(cfg: Config, cli_entries: Optional[list] = None) -> None:
    """Opts in the checkpoints a user trusts (:func:`convmlp_mm.engine.checkpoint.trust_checkpoint`): the
    config's ``trusted_checkpoints`` list (paths, URLs or ``dict(file=..., sha256=...)``) and the
    tools' ``--trust-checkpoint FILE[:SHA256]`` entries."""
    entries = list(cfg.get('trusted_checkpoints', None) or [])
    for entry in cli_entries or []:
        head, _, tail = entry.rpartition(':')
        entries.append(dict(file=head, sha256=tail) if head and re.fullmatch('[0-9a-fA-F]{64}', tail) else entry)
    trust_checkpoints(entries)


TRUST_HELP = ('a checkpoint you trust, read with a full unpickler (it can run code it names) instead of '
              'weights-only; FILE or FILE:SHA256; repeatable')


def load_config(filename: str, options: dict, launcher: str, work_dir: Optional[str],
                trusted: Optional[list] = None, splits: Sequence[str] = ('train', 'val')) -> Config:
    """The config of ``tools/train.py`` and ``tools/test.py``: ``--cfg-options`` merged in, its
    scope and the datasets of ``splits`` checked (see :func:`~convmlp_mm.data.checks.check_datasets`),
    its trusted checkpoints opted in (:func:`trust_from`), and its launcher and work dir (default
    ``work_dirs/CONFIG_NAME``) set.

    Raises:
        ValueError: unknown scope; :class:`DatasetError`: a dataset that cannot be used.
    """
    cfg = Config.fromfile(filename)
    cfg.merge_from_dict(options)
    check_scope(cfg, filename)
    check_datasets(cfg, splits)
    trust_from(cfg, trusted)
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join('work_dirs', osp.splitext(osp.basename(filename))[0])
    return cfg


STALL_HELP = ("stop the job when a rank makes no progress for this long, with every rank's stacks in the log "
              f"(default: the config's StallWatchdogHook, else {DEFAULT_STALL_TIMEOUT:g}; 0: never)")


def add_run_hooks(cfg: Config, stall_timeout: Optional[float], preemption: bool) -> None:
    """Adds :class:`~convmlp_mm.engine.hooks.StallWatchdogHook` (and, with ``preemption``,
    :class:`~convmlp_mm.engine.hooks.PreemptionHook`) to ``cfg.custom_hooks`` unless the config lists
    them already. ``stall_timeout``: seconds, 0 for no watchdog, None for the config's hook or
    :data:`~convmlp_mm.engine.hooks.DEFAULT_STALL_TIMEOUT`.

    Raises:
        ValueError: a negative ``stall_timeout``.
    """
    if stall_timeout is not None and stall_timeout < 0:
        raise ValueError(f'--stall-timeout {stall_timeout:g}: expected seconds > 0, or 0 for no watchdog')
    hooks = [h for h in cfg.get('custom_hooks', []) if h.get('type') != 'StallWatchdogHook' or stall_timeout is None]
    listed = {h.get('type') for h in hooks}
    if stall_timeout != 0 and 'StallWatchdogHook' not in listed:
        hooks.append(dict(type='StallWatchdogHook', timeout=stall_timeout or DEFAULT_STALL_TIMEOUT))
    if preemption and 'PreemptionHook' not in listed:
        hooks.append(dict(type='PreemptionHook'))
    cfg.custom_hooks = hooks


#: mmengine's training loops and the resumable loops of :mod:`convmlp_mm.engine.loops` that replace
#: them in the runs our tools start.
RESUMABLE_LOOPS = {'EpochBasedTrainLoop': 'ResumableEpochBasedTrainLoop',
                   'IterBasedTrainLoop': 'ResumableIterBasedTrainLoop'}


def use_runtime_parts(cfg: Config, training: bool) -> List[str]:
    """Selects the runtime parts of :mod:`convmlp_mm.engine` in ``cfg`` for a run one of our tools
    starts, where the config has not chosen otherwise, and returns their names (for the log):

    - :class:`~convmlp_mm.engine.SafeCheckpointLoadHook`: every checkpoint read weights-only;
    - training: the resumable loop in place of mmengine's, :class:`~convmlp_mm.engine.AtomicLocalBackend`
      for the checkpoint hook's files (when it writes locally and names no backend), and
      ``CPUAmpOptimWrapper`` in place of ``AmpOptimWrapper`` where the device is the CPU;
    - distributed runs on the CPU: ``CPUDistributedDataParallel`` (when the config has no
      ``model_wrapper_cfg``).
    """
    parts = []
    hooks = list(cfg.get('custom_hooks', None) or [])
    if 'SafeCheckpointLoadHook' not in {h.get('type') for h in hooks}:
        hooks.insert(0, dict(type='SafeCheckpointLoadHook'))
    cfg.custom_hooks = hooks
    parts.append('SafeCheckpointLoadHook')
    on_cpu = get_device() == 'cpu'
    if training:
        loop = cfg.get('train_cfg') or {}
        if 'type' in loop or 'by_epoch' in loop:  # else mmengine names what is missing
            kind = loop.get('type') or ('EpochBasedTrainLoop' if loop.by_epoch else 'IterBasedTrainLoop')
            kind = RESUMABLE_LOOPS.get(kind, kind)
            if 'type' not in loop:  # mmengine picks the loop by by_epoch; with a type the loop gets the keys
                loop.pop('by_epoch')
            loop.type = kind
            parts.append(kind)
        checkpoint = cfg.get('default_hooks', {}).get('checkpoint')
        if checkpoint is not None and '://' not in str(checkpoint.get('out_dir') or ''):
            if checkpoint.get('backend_args') is None:
                checkpoint.backend_args = dict(backend='atomic_local')
            if checkpoint.backend_args.get('backend') == 'atomic_local':
                parts.append('AtomicLocalBackend')
        wrapper = cfg.get('optim_wrapper', {})
        if on_cpu and wrapper.get('type') == 'AmpOptimWrapper':
            wrapper.type = 'CPUAmpOptimWrapper'
        if wrapper.get('type') == 'CPUAmpOptimWrapper':
            parts.append('CPUAmpOptimWrapper')
    if on_cpu and cfg.get('launcher', 'none') != 'none':
        if cfg.get('model_wrapper_cfg') is None:
            cfg.model_wrapper_cfg = dict(type='CPUDistributedDataParallel')
        if cfg.model_wrapper_cfg.get('type') == 'CPUDistributedDataParallel':
            parts.append('CPUDistributedDataParallel')
    return parts


def slurm_restarts() -> int:
    """How often Slurm has requeued this job (``SLURM_RESTART_COUNT``; 0 outside Slurm)."""
    count = os.environ.get('SLURM_RESTART_COUNT', '0')
    return int(count) if count.isdigit() else 0


__all__ = ['DEFAULT_STALL_TIMEOUT', 'RESUMABLE_LOOPS', 'SCOPES', 'STALL_HELP', 'TRUST_HELP', 'DatasetError',
           'CheckpointFitsHook', 'add_run_hooks', 'check_scope', 'enable_amp', 'find_resume_checkpoint', 'finish_distributed',
           'keep_freed_memory', 'load_config', 'slurm_restarts', 'trust_from', 'use_runtime_parts']
