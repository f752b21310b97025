"""The project's hooks, each under a name of its own (registered into mmengine's ``HOOKS``)."""
from .checkpoint_fits import CheckpointFitsHook
from .finite_loss import FiniteLossHook
from .preemption import Preempted, PreemptionHook, requeue_slurm_job, slurm_job_fields
from .prepare_inference import PrepareInferenceHook
from .random_state import RANDOM_STATE_KEY, RandomStateHook, random_state, set_random_state
from .stall_watchdog import DEFAULT_STALL_TIMEOUT, StallWatchdogHook

__all__ = ['CheckpointFitsHook', 'FiniteLossHook', 'Preempted', 'PreemptionHook', 'PrepareInferenceHook',
           'RandomStateHook', 'StallWatchdogHook', 'DEFAULT_STALL_TIMEOUT', 'RANDOM_STATE_KEY', 'random_state',
           'set_random_state',
           'requeue_slurm_job', 'slurm_job_fields']
