"""Train a detection, segmentation or classification config (mmdet, mmseg or mmpretrain).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp] [--auto-scale-lr]
                                 [--cfg-options KEY=VALUE ...] [--stall-timeout SECONDS]
                                 [--launcher {none,pytorch,slurm,mpi}]

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
import argparse
import os

from mmengine.config import DictAction
from mmengine.runner import Runner

import convmlp_mm  # noqa: F401  (registers the models and the runtime parts)
from convmlp_mm.engine import Preempted, init_cpu_process_group
from convmlp_mm.models.weights import CheckpointError
from convmlp_mm.runtime import (STALL_HELP, TRUST_HELP, DatasetError, CheckpointFitsHook, add_run_hooks,
                                enable_amp, find_resume_checkpoint, finish_distributed, keep_freed_memory,
                                load_config, slurm_restarts, use_runtime_parts)

parser = argparse.ArgumentParser(description='Train a model from an mm config.')
parser.add_argument('config', help='config file')
parser.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/CONFIG_NAME)')
parser.add_argument('--resume', nargs='?', const='auto', default=None,
                    help='resume from CHECKPOINT, or from the latest checkpoint in the work dir if none is given')
parser.add_argument('--amp', action='store_true', help='mixed precision (fp16 on GPU, bf16 on CPU)')
parser.add_argument('--auto-scale-lr', action='store_true',
                    help="scale the lr linearly from the config's auto_scale_lr.base_batch_size")
parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                    help='override config entries, e.g. train_cfg.max_epochs=1')
parser.add_argument('--trust-checkpoint', action='append', default=[], metavar='FILE[:SHA256]', help=TRUST_HELP)
parser.add_argument('--stall-timeout', type=float, metavar='SECONDS', help=STALL_HELP)
parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)


def main() -> None:
    args = parser.parse_args()
    keep_freed_memory()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    try:
        cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir, args.trust_checkpoint)
        add_run_hooks(cfg, args.stall_timeout, preemption=True)
        if args.amp:
            enable_amp(cfg)
        parts = use_runtime_parts(cfg, training=True)
    except DatasetError as error:
        parser.exit(2, f'error: {error}\n')
    except ValueError as error:  # a malformed trusted_checkpoints entry, --stall-timeout or --amp wrapper
        parser.exit(2, f'error: {error}\n')
    restarts = slurm_restarts()
    if args.resume is None and restarts:
        print(f'Slurm requeued this job ({restarts} times): resuming from {cfg.work_dir}', flush=True)
        args.resume = 'auto'
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        latest = find_resume_checkpoint(cfg.work_dir)
        if latest is None:
            print(f'--resume: no checkpoint in {cfg.work_dir} yet, starting from scratch', flush=True)
        cfg.resume, cfg.load_from = latest is not None, latest
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    if cfg.get('randomness', {}).get('deterministic'):
        # fresh workers each epoch, seeded as mmengine does: a resumed epoch replays its augmentations
        cfg.train_dataloader.persistent_workers = False
    if init_cpu_process_group(args.launcher):
        parts.append('init_cpu_process_group')
    print(f'convmlp_mm runtime parts: {", ".join(parts)}', flush=True)
    runner = Runner.from_cfg(cfg)
    if cfg.resume and cfg.load_from:
        runner.register_hook(CheckpointFitsHook(cfg.load_from))
    try:
        runner.train()
    except (CheckpointError, FloatingPointError) as error:
        parser.exit(1, f'error: {error}\n')
    except Preempted as stop:
        finish_distributed(stop.code)
        raise
    finish_distributed()


if __name__ == '__main__':
    main()
