# The runtime parts of convmlp_mm (convmlp_mm/engine), as config lines. Our configs inherit this
# file; a config of your own gets the same by adding it to _base_ (next to its mmdet::, mmseg::
# or mmpretrain:: base) and copying the body lines below. tools/train.py and tools/test.py select
# all of them for the runs they start, whatever the config says.
custom_imports = dict(imports=['convmlp_mm'], allow_failed_imports=False)
# Every checkpoint of the run read weights-only (SafeCheckpointLoadHook); a resumed run draws the
# random numbers of an uninterrupted one (RandomStateHook); a NaN/inf loss stops training before
# the optimizer step (FiniteLossHook; action='skip' skips such steps).
custom_hooks = [dict(type='SafeCheckpointLoadHook'), dict(type='RandomStateHook'), dict(type='FiniteLossHook')]

# The lines below go into the config body: the host bases define these keys, and mmengine does
# not let a second base set them again.
#   A mid-epoch checkpoint (preemption) resumes exactly:
#     train_cfg = dict(type='ResumableEpochBasedTrainLoop')   # 'ResumableIterBasedTrainLoop' for iteration-based
#   Checkpoint files complete or absent:
#     default_hooks = dict(checkpoint=dict(backend_args=dict(backend='atomic_local')))
#   Mixed precision on GPUs, bfloat16 on the CPU:
#     optim_wrapper = dict(type='CPUAmpOptimWrapper')
#   Several processes on the CPU (gloo, per-process BatchNorm in place of SyncBN):
#     model_wrapper_cfg = dict(type='CPUDistributedDataParallel')
