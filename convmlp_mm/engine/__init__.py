"""The engine layer: opt-in runtime parts for long, safe runs, each registered under a name of its
own and selected by a config line (``configs/_base_/convmlp_runtime.py``) or by our tools.
Importing it registers names and installs nothing.

================================  =================================================================
part                              how a run selects it
================================  =================================================================
SafeCheckpointLoadHook            ``custom_hooks=[dict(type='SafeCheckpointLoadHook')]`` (a ``with``
                                  context for scripts: ``safe_checkpoint_loading()``)
ResumableEpochBasedTrainLoop,     ``train_cfg=dict(type='ResumableEpochBasedTrainLoop', ...)``
ResumableIterBasedTrainLoop
EpochSeededDataset                ``train_dataloader=dict(dataset=dict(type='EpochSeededDataset', dataset=...))``
RandomStateHook, FiniteLossHook,  ``custom_hooks``
PreemptionHook, StallWatchdogHook
AtomicLocalBackend                ``default_hooks=dict(checkpoint=dict(backend_args=dict(backend='atomic_local')))``
CPUDistributedDataParallel        ``model_wrapper_cfg=dict(type='CPUDistributedDataParallel')``
init_cpu_process_group            called by ``tools/train.py`` and ``tools/test.py`` before the Runner
CPUAmpOptimWrapper                ``optim_wrapper=dict(type='CPUAmpOptimWrapper', ...)``
AmpTestLoop, PrepareInferenceHook ``test_cfg=dict(type='AmpTestLoop')``, ``custom_hooks``
CheckpointFitsHook                ``custom_hooks`` (our tools add it when they resume or test)
keep_freed_memory                 called by our tools (process-wide CPU allocator setting)
================================  =================================================================
"""
from .amp import CPUAmpOptimWrapper
from .checkpoint import SafeCheckpointLoadHook, load_checkpoint, safe_checkpoint_loading, trust_checkpoint
from .dataset import EpochSeededDataset
from .distributed import CPUDistributedDataParallel, init_cpu_process_group
from .fileio import AtomicLocalBackend, write_atomically
from .hooks import (CheckpointFitsHook, FiniteLossHook, Preempted, PreemptionHook, PrepareInferenceHook,
                    RandomStateHook, StallWatchdogHook)
from .memory import keep_freed_memory
from .loops import AmpTestLoop, ResumableEpochBasedTrainLoop, ResumableIterBasedTrainLoop

__all__ = ['AmpTestLoop', 'AtomicLocalBackend', 'CPUAmpOptimWrapper', 'CPUDistributedDataParallel',
           'CheckpointFitsHook', 'EpochSeededDataset', 'FiniteLossHook', 'Preempted', 'PreemptionHook',
           'PrepareInferenceHook', 'RandomStateHook', 'ResumableEpochBasedTrainLoop', 'ResumableIterBasedTrainLoop',
           'SafeCheckpointLoadHook', 'StallWatchdogHook', 'init_cpu_process_group', 'keep_freed_memory',
           'load_checkpoint', 'safe_checkpoint_loading', 'trust_checkpoint',
           'write_atomically']
