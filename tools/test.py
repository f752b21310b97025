"""Evaluate a checkpoint on a config's test set (mmdet, mmseg or mmpretrain config).

    python tools/test.py CONFIG CHECKPOINT [--amp] [--work-dir DIR] [--out FILE_OR_DIR [--out-item ITEM]]
                                           [--show] [--show-dir DIR] [--wait-time S] [--interval N] [--tta]
                                           [--no-pin-memory] [--cfg-options ...] [--no-data-check]
                                           [--stall-timeout SECONDS] [--launcher {none,pytorch,slurm,mpi}]

Every flag of mmdet's, mmseg's and mmpretrain's own ``tools/test.py`` works here with the meaning
it has in the config's host (``--out``: mmdet and mmpretrain dump the predictions into a .pkl
file, mmseg saves the predicted maps into a folder). CHECKPOINT is a file or a URL (http(s)://,
open-mmlab://, ...).

CHECKPOINT may also be an ``.onnx`` file of the config's network, float32 or int8
(``tools/deployment/export_onnx.py``, ``quantize_int8.py``): ONNX Runtime then computes the
network's tensors and the config's own data preprocessor, head post-processing and evaluator do
the rest (:class:`convmlp_mm.quantization.OnnxRuntimeModel`), so its metrics stand beside the
PyTorch model's.

``--amp`` prepares the loaded model for inference (:func:`convmlp_mm.prepare_inference`: our
backbones fused, the whole model in channels-last memory, the heads' output layers in float32) and
runs it under autocast (bfloat16 on the CPU, float16 on GPUs).

Several GPUs (or CPU processes): ``tools/dist_test.sh``; on Slurm: ``tools/slurm_test.sh``. A rank
that makes no progress for ``--stall-timeout`` seconds writes its stacks to the log and stops.
"""
import os

import mmengine
from mmengine.dist import is_main_process
from mmengine.runner import Runner

import convmlp_mm  # noqa: F401  (registers the models and the runtime parts)
from convmlp_mm.cli import (add_out_dumper, add_run_hooks, apply_test_flags, check_data, checkpoint_argument,
                            exit_with_error, finish_distributed, load_config, start_process_group, test_parser,
                            use_runtime_parts)
from convmlp_mm.compat import emulated_bf16_warning
from convmlp_mm.engine import CheckpointFitsHook, keep_freed_memory
from convmlp_mm.models.weights import CheckpointError

parser = test_parser('Test a checkpoint with an mm config.')


def use_amp(cfg, parts) -> None:
    """``--amp``: the prepared model under autocast, predictions in float32 for the metrics."""
    cfg.test_cfg = dict(type='AmpTestLoop')
    cfg.custom_hooks.append(dict(type='PrepareInferenceHook'))
    parts += ['AmpTestLoop', 'PrepareInferenceHook']
    if emulated_bf16_warning():
        print(f'warning: --amp: {emulated_bf16_warning()}', flush=True)


def use_onnx(cfg, path: str, parts) -> None:
    """An ``.onnx`` CHECKPOINT: the graph in place of the config's network."""
    from convmlp_mm import quantization  # noqa: F401  (registers OnnxRuntimeModel)
    cfg.model = dict(type='OnnxRuntimeModel', model=cfg.model, onnx=path, scope=cfg.default_scope)
    cfg.load_from = None
    parts.append('OnnxRuntimeModel')


def main() -> None:
    args = parser.parse_args()
    keep_freed_memory()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    checkpoint = checkpoint_argument(parser, args.checkpoint)
    try:
        cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir, args.trust_checkpoint)
        add_run_hooks(cfg, args.stall_timeout, preemption=False)
        apply_test_flags(cfg, args, args.config)
        cfg.load_from = checkpoint
        parts = use_runtime_parts(cfg, training=False)
        onnx = str(checkpoint).endswith('.onnx')
        if onnx and args.amp:
            raise ValueError(f'--amp with {checkpoint}: an .onnx graph runs in the precision it was written in; '
                             'leave out --amp')
        if onnx:
            use_onnx(cfg, checkpoint, parts)
        if args.amp:
            use_amp(cfg, parts)
        if start_process_group(cfg):
            parts.append('init_cpu_process_group')
        check_data(cfg, ('test', ), enabled=not args.no_data_check)
    except ValueError as error:  # DatasetError, or a malformed flag or trusted_checkpoints entry
        exit_with_error(2, error)
    print(f'convmlp_mm runtime parts: {", ".join(parts)}', flush=True)
    runner = Runner.from_cfg(cfg)
    if not onnx:
        runner.register_hook(CheckpointFitsHook(checkpoint))  # evaluates exactly the checkpoint's weights
    add_out_dumper(runner, args, cfg.default_scope)
    try:
        metrics = runner.test()
    except CheckpointError as error:
        exit_with_error(1, error)
    if is_main_process():  # every rank has the metrics; one reports them
        if args.out and args.out_item == 'metrics':
            mmengine.dump(metrics, args.out)
        print('\n'.join(['metrics:'] + [f'  {k}: {v:.4f}' if isinstance(v, float) else f'  {k}: {v}'
                                         for k, v in metrics.items()]))
    finish_distributed()


if __name__ == '__main__':
    main()
