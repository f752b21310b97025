"""Train a detection, segmentation or classification config (mmdet, mmseg or mmpretrain).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp] [--auto-scale-lr]
                                 [--no-validate] [--no-pin-memory] [--no-persistent-workers]
                                 [--cfg-options KEY=VALUE ...] [--no-data-check] [--stall-timeout SECONDS]
                                 [--launcher {none,pytorch,slurm,mpi}]

Every flag of mmdet's, mmseg's and mmpretrain's own ``tools/train.py`` works here with the same
meaning. The datasets are checked once before the run (on rank 0; ``--no-data-check`` or
``data_check=False`` in the config turns that off).

One entry point for all three libraries: the config's ``default_scope`` says which one builds
it. Several GPUs (or CPU processes without a GPU): ``tools/dist_train.sh CONFIG N``; on Slurm:
``tools/slurm_train.sh``.

Every run this tool starts uses the runtime parts of ``convmlp_mm.engine`` (named in one log
line; see ``configs/_base_/convmlp_runtime.py`` for the same lines in a config of your own):
checkpoints read weights-only and written atomically, the resumable training loop (a mid-epoch
checkpoint continues exactly), on the CPU gloo and per-process BatchNorm for several processes
and bfloat16 for ``--amp``. It stops cleanly on SIGTERM or SIGUSR1 (a checkpoint at the next
iteration boundary, exit code 128 + the signal's number, and under Slurm a requeue;
``PreemptionHook``), and a rank that makes no progress for ``--stall-timeout`` seconds writes its
stacks to the log and stops the job (``StallWatchdogHook``). A requeued Slurm job resumes as with
``--resume``.
"""
import os

from mmengine.runner import Runner

import convmlp_mm  # noqa: F401  (registers the models and the runtime parts)
from convmlp_mm.cli import (add_run_hooks, apply_train_flags, check_data, exit_with_error, find_resume_checkpoint,
                            finish_distributed, load_config, slurm_restarts, start_process_group, train_parser,
                            use_runtime_parts)
from convmlp_mm.engine import CheckpointFitsHook, Preempted, keep_freed_memory
from convmlp_mm.models.weights import CheckpointError

parser = train_parser('Train a model from an mm config.')


def resume_from(cfg, resume) -> None:
    """``--resume [CHECKPOINT]`` (or a requeued Slurm job) as ``cfg.resume`` and ``cfg.load_from``."""
    restarts = slurm_restarts()
    if resume is None and restarts:
        print(f'Slurm requeued this job ({restarts} times): resuming from {cfg.work_dir}', flush=True)
        resume = 'auto'
    if resume == 'auto':
        latest = find_resume_checkpoint(cfg.work_dir, log=lambda line: print(f'--resume: {line}', flush=True))
        if latest is None:
            print(f'--resume: no checkpoint in {cfg.work_dir} yet, starting from scratch', flush=True)
        cfg.resume, cfg.load_from = latest is not None, latest
    elif resume:
        cfg.resume, cfg.load_from = True, resume


def main() -> None:
    args = parser.parse_args()
    keep_freed_memory()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    try:
        cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir, args.trust_checkpoint)
        add_run_hooks(cfg, args.stall_timeout, preemption=True)
        apply_train_flags(cfg, args, args.config)
        parts = use_runtime_parts(cfg, training=True)
        resume_from(cfg, args.resume)
        if start_process_group(cfg):
            parts.append('init_cpu_process_group')
        check_data(cfg, ('train', 'val'), enabled=not args.no_data_check)
    except ValueError as error:  # DatasetError, or a malformed flag, trusted_checkpoints entry or wrapper
        exit_with_error(2, error)
    print(f'convmlp_mm runtime parts: {", ".join(parts)}', flush=True)
    runner = Runner.from_cfg(cfg)
    if cfg.resume and cfg.load_from:
        runner.register_hook(CheckpointFitsHook(cfg.load_from))
    try:
        runner.train()
    except (CheckpointError, FloatingPointError) as error:
        exit_with_error(1, error)
    except Preempted as stop:
        finish_distributed(stop.code)
        raise
    finish_distributed()


if __name__ == '__main__':
    main()
