"""Evaluate a checkpoint on a config's test set (mmdet, mmseg or mmpretrain config).

    python tools/test.py CONFIG CHECKPOINT [--amp] [--work-dir DIR] [--show-dir DIR] [--cfg-options ...]
                                           [--stall-timeout SECONDS] [--launcher {none,pytorch,slurm,mpi}]

``--amp`` prepares the loaded model for inference (:func:`convmlp_mm.prepare_inference`: our
backbones fused, the whole model in channels-last memory, the heads' output layers in float32) and
runs it under autocast (bfloat16 on the CPU, float16 on GPUs).

Several GPUs (or CPU processes): ``tools/dist_test.sh``; on Slurm: ``tools/slurm_test.sh``. A rank
that makes no progress for ``--stall-timeout`` seconds writes its stacks to the log and stops.
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction
from mmengine.dist import is_main_process
from mmengine.runner import Runner

import convmlp_mm  # noqa: F401  (registers the models and the runtime parts)
from convmlp_mm.compat import emulated_bf16_warning
from convmlp_mm.engine import init_cpu_process_group
from convmlp_mm.models.weights import CheckpointError
from convmlp_mm.runtime import (STALL_HELP, TRUST_HELP, CheckpointFitsHook, DatasetError, add_run_hooks,
                                finish_distributed, keep_freed_memory, load_config, use_runtime_parts)

parser = argparse.ArgumentParser(description='Test a checkpoint with an mm config.')
parser.add_argument('config', help='config file')
parser.add_argument('checkpoint', help='checkpoint file')
parser.add_argument('--amp', action='store_true', help='autocast: bfloat16 on the CPU, float16 on GPUs')
parser.add_argument('--work-dir', help='where the metrics log goes (default: work_dirs/CONFIG_NAME)')
parser.add_argument('--show-dir', help='draw predictions into WORK_DIR/TIMESTAMP/SHOW_DIR')
parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                    help='override config entries, e.g. test_evaluator.classwise=True')
parser.add_argument('--trust-checkpoint', action='append', default=[], metavar='FILE[:SHA256]', help=TRUST_HELP)
parser.add_argument('--stall-timeout', type=float, metavar='SECONDS', help=STALL_HELP)
parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)


def main() -> None:
    args = parser.parse_args()
    keep_freed_memory()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint {args.checkpoint!r} does not exist')
    try:
        cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir, args.trust_checkpoint,
                          splits=('test', ))
        add_run_hooks(cfg, args.stall_timeout, preemption=False)
    except DatasetError as error:
        parser.exit(2, f'error: {error}\n')
    except ValueError as error:  # a malformed trusted_checkpoints entry or --stall-timeout
        parser.exit(2, f'error: {error}\n')
    cfg.load_from = args.checkpoint
    parts = use_runtime_parts(cfg, training=False)
    if args.amp:
        cfg.test_cfg = dict(type='AmpTestLoop')  # autocast; predictions in float32 for the metrics
        cfg.custom_hooks.append(dict(type='PrepareInferenceHook'))
        parts += ['AmpTestLoop', 'PrepareInferenceHook']
        if emulated_bf16_warning():
            print(f'warning: --amp: {emulated_bf16_warning()}', flush=True)
    if args.show_dir:
        visualization = cfg.default_hooks.get('visualization')
        if visualization is None:
            parser.error(f'{args.config} has no visualization hook for --show-dir')
        visualization.update(draw=True, test_out_dir=args.show_dir)
    if init_cpu_process_group(args.launcher):
        parts.append('init_cpu_process_group')
    print(f'convmlp_mm runtime parts: {", ".join(parts)}', flush=True)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(CheckpointFitsHook(args.checkpoint))  # evaluates exactly the checkpoint's weights
    try:
        metrics = runner.test()
    except CheckpointError as error:
        parser.exit(1, f'error: {error}\n')
    if is_main_process():  # every rank has the metrics; one reports them
        print('\n'.join(['metrics:'] + [f'  {k}: {v:.4f}' if isinstance(v, float) else f'  {k}: {v}'
                                         for k, v in metrics.items()]))
    finish_distributed()


if __name__ == '__main__':
    main()
