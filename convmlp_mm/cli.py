"""The shared code of the entry points in ``tools/`` (train, test, infer, the visualisers,
export): their common flags as the hosts' tools spell them, reading a config, starting the
process group, checking the datasets once, choosing the runtime parts of :mod:`convmlp_mm.engine`
for a run (:func:`use_runtime_parts`), finding a checkpoint to resume. Nothing here runs on
``import convmlp_mm``."""
import argparse
import glob
import logging
import os
import os.path as osp
import re
import sys
from typing import Callable, List, Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.device import get_device

from .data.checks import check_datasets_once
from .engine.checkpoint import trust_checkpoints
from .engine.distributed import init_cpu_process_group
from .engine.hooks import DEFAULT_STALL_TIMEOUT
from .mm import check_scope
from .models.weights import pickled_strings


def resumable(path: str) -> bool:
    """Whether checkpoint ``path`` holds the optimizer and message-hub state a resume reads (seen
    in its pickle's strings, without loading it); a best-metric or published file does not."""
    try:
        return {'optimizer', 'message_hub'} <= pickled_strings(path)
    except Exception:  # unreadable, truncated: not one to resume from
        return False


def find_resume_checkpoint(work_dir: str, log: Callable[[str], None] = print) -> Optional[str]:
    """The checkpoint ``tools/train.py --resume`` continues from: the one named in the work dir's
    ``last_checkpoint`` file, or, when that file is missing, empty or names a file that is gone
    (a job killed while writing it), the newest ``*.pth`` in the work dir that can be resumed
    (:func:`resumable`; never ``best_*``), said in a ``log`` line. None if there is none.
    Checkpoint files themselves are written atomically (:class:`~convmlp_mm.engine.AtomicLocalBackend`)."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            return named
    passed = []
    # not the hidden .NAME.partial-PID files
    for path in sorted(glob.glob(osp.join(work_dir, '*.pth')), key=osp.getmtime, reverse=True):
        if not osp.basename(path).startswith('best_') and resumable(path):
            log(f'no usable last_checkpoint in {work_dir}: resuming from {path}, the newest checkpoint with '
                'optimizer and message-hub state' + (f' (passed over: {", ".join(passed)})' if passed else ''))
            return path
        passed.append(osp.basename(path))
    return None


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


def exit_with_error(code: int, error: Exception) -> None:
    """The tools' end on bad input or a failed run: one ``error: ...`` line on stderr, then exit
    ``code`` (every rank of a distributed run gives the same line; :func:`finish_distributed`)."""
    print(f'error: {error}', file=sys.stderr, flush=True)
    finish_distributed(code)
    sys.exit(code)


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
    - training: the resumable loop in place of mmengine's, :class:`~convmlp_mm.engine.EpochSeededDataset`
      around the training dataset of an epoch-based run with data workers,
      :class:`~convmlp_mm.engine.AtomicLocalBackend` for the checkpoint hook's files (when it writes
      locally and names no backend), and ``CPUAmpOptimWrapper`` in place of ``AmpOptimWrapper``
      where the device is the CPU;
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
            loader = cfg.get('train_dataloader') or {}
            if kind == 'ResumableEpochBasedTrainLoop' and loader.get('num_workers') and loader.get('dataset') \
                    and loader.dataset.get('type') != 'EpochSeededDataset':
                loader.dataset = dict(type='EpochSeededDataset', dataset=loader.dataset)
            if loader.get('dataset', {}).get('type') == 'EpochSeededDataset':
                parts.append('EpochSeededDataset')
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
        if cfg.get('model_wrapper_cfg') is None:  # mmengine's default wrapper takes the top-level flag too
            cfg.model_wrapper_cfg = dict(type='CPUDistributedDataParallel',
                                         find_unused_parameters=cfg.get('find_unused_parameters', False))
        if cfg.model_wrapper_cfg.get('type') == 'CPUDistributedDataParallel':
            parts.append('CPUDistributedDataParallel')
    return parts


def slurm_restarts() -> int:
    """How often Slurm has requeued this job (``SLURM_RESTART_COUNT``; 0 outside Slurm)."""
    count = os.environ.get('SLURM_RESTART_COUNT', '0')
    return int(count) if count.isdigit() else 0


def load_config(filename: str, options: dict, launcher: str, work_dir: Optional[str],
                trusted: Optional[list] = None) -> Config:
    """The config of ``tools/train.py`` and ``tools/test.py``: ``--cfg-options`` merged in, its
    scope checked, its trusted checkpoints opted in (:func:`trust_from`), and its launcher and work
    dir (default ``work_dirs/CONFIG_NAME``) set.

    Raises:
        ValueError: unknown scope, or a malformed ``trusted_checkpoints`` entry.
    """
    cfg = Config.fromfile(filename)
    cfg.merge_from_dict(options or {})
    check_scope(cfg, filename)
    trust_from(cfg, trusted)
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join('work_dirs', osp.splitext(osp.basename(filename))[0])
    return cfg


def start_process_group(cfg: Config) -> bool:
    """Starts the process group of a distributed run before the Runner, so that the datasets can
    be checked once for all ranks: gloo where the device is the CPU
    (:func:`~convmlp_mm.engine.init_cpu_process_group`), else mmengine's ``init_dist`` with the
    config's ``env_cfg.dist_cfg``, as the Runner would (it then finds the group started). Returns
    whether the CPU process group was started; nothing for ``launcher='none'``."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.distributed.is_initialized():
        return False
    if init_cpu_process_group(launcher):
        return True
    from mmengine.dist import init_dist
    init_dist(launcher, **(cfg.get('env_cfg', {}).get('dist_cfg') or {}))
    return False


def check_data(cfg: Config, splits: Sequence[str], enabled: bool = True) -> None:
    """The datasets of ``splits`` checked once, on rank 0, the other ranks getting its verdict
    (:func:`~convmlp_mm.data.checks.check_datasets_once`), unless ``--no-data-check`` or the
    config's ``data_check=False`` turns the checks off.

    Raises:
        DatasetError: a dataset that cannot be used.
    """
    if enabled and cfg.get('data_check', True):
        check_datasets_once(cfg, splits)


def checkpoint_argument(parser: argparse.ArgumentParser, checkpoint: str) -> str:
    """``checkpoint`` as the loaders take it: an existing file, a URL or an ``open-mmlab://``-style
    name (``SCHEME://...``); anything else is a usage error."""
    if '://' not in checkpoint and not osp.isfile(checkpoint):
        parser.error(f'checkpoint {checkpoint!r} does not exist: expected a checkpoint file or a URL '
                     '(http(s)://, open-mmlab://, torchvision://, ...)')
    return checkpoint


def enable_auto_scale_lr(cfg: Config, filename: str) -> None:
    """``--auto-scale-lr``: the config's ``auto_scale_lr`` turned on.

    Raises:
        ValueError: the config has no ``auto_scale_lr.base_batch_size``.
    """
    scale = cfg.get('auto_scale_lr')
    if not scale or 'base_batch_size' not in scale:
        raise ValueError(f"--auto-scale-lr: {filename} has no auto_scale_lr=dict(base_batch_size=...), the total "
                         'batch size its lr is for; add it to the config (or --cfg-options '
                         'auto_scale_lr.base_batch_size=N)')
    scale.enable = True


# ------------------------------------------------------------------ the hosts' tools' flags
LAUNCHERS = ['none', 'pytorch', 'slurm', 'mpi']


def _common_flags(parser: argparse.ArgumentParser) -> None:
    """The flags both tools share with every host's ``train.py`` and ``test.py``."""
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/CONFIG_NAME)')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision (fp16 on GPU, bf16 on CPU); in test.py, autocast')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_epochs=1')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--no-pin-memory', action='store_true', help='pin_memory=False in every dataloader')
    parser.add_argument('--no-data-check', action='store_true',
                        help='skip the dataset checks before the run (also: data_check=False in the config)')
    parser.add_argument('--trust-checkpoint', action='append', default=[], metavar='FILE[:SHA256]', help=TRUST_HELP)
    parser.add_argument('--stall-timeout', type=float, metavar='SECONDS', help=STALL_HELP)


def train_parser(description: str) -> argparse.ArgumentParser:
    """``tools/train.py``'s flags: every flag of mmdet's, mmseg's and mmpretrain's ``train.py``
    with the same meaning (mmseg's ``--resume`` without a value is ours without one), and ours."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file')
    parser.add_argument('--resume', nargs='?', type=str, const='auto', default=None,
                        help='resume from CHECKPOINT, or from the latest checkpoint in the work dir if none is given')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help="scale the lr linearly from the config's auto_scale_lr.base_batch_size")
    parser.add_argument('--no-validate', action='store_true', help='no validation during training')
    parser.add_argument('--no-persistent-workers', action='store_true',
                        help='persistent_workers=False in every dataloader')
    _common_flags(parser)
    return parser


def test_parser(description: str) -> argparse.ArgumentParser:
    """``tools/test.py``'s flags: every flag of mmdet's, mmseg's and mmpretrain's ``test.py`` with
    the same meaning, and ours."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file or URL')
    parser.add_argument('--out', type=str, help='mmdet, mmpretrain: dump the predictions (or with --out-item '
                        'metrics, the metrics) into this .pkl file; mmseg: save the predicted maps into this folder')
    parser.add_argument('--out-item', choices=['metrics', 'pred'], help="what --out holds (mmpretrain's flag)")
    parser.add_argument('--show', action='store_true', help='show the predictions in a window')
    parser.add_argument('--show-dir', help='draw the predictions into WORK_DIR/TIMESTAMP/SHOW_DIR')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds each shown image stays (with --show)')
    parser.add_argument('--interval', type=int, default=1, help='draw every INTERVAL-th image (mmpretrain)')
    parser.add_argument('--tta', action='store_true', help="test-time augmentation: the config's tta_model and "
                        'tta_pipeline (mmdet and mmpretrain: flip augmentation where the config has none)')
    _common_flags(parser)
    return parser


def _loaders(cfg: Config) -> List[dict]:
    return [cfg[f'{split}_dataloader'] for split in ('train', 'val', 'test') if cfg.get(f'{split}_dataloader')]


def apply_train_flags(cfg: Config, args: argparse.Namespace, filename: str) -> None:
    """The hosts' training flags on ``cfg``: ``--auto-scale-lr``, ``--no-validate``,
    ``--no-pin-memory``, ``--no-persistent-workers``, ``--amp``.

    Raises:
        ValueError: ``--auto-scale-lr`` without ``auto_scale_lr``; ``--amp`` with another wrapper.
    """
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg, filename)
    if args.amp:
        enable_amp(cfg)
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    for loader in _loaders(cfg):
        if args.no_pin_memory:
            loader.pin_memory = False
        if args.no_persistent_workers:
            loader.persistent_workers = False


#: mmdet's and mmpretrain's default test-time augmentation models (mmseg's configs name theirs).
TTA_MODELS = dict(mmdet=dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                                                              max_per_img=100)),
                  mmpretrain=dict(type='AverageClsScoreTTA'))


def flip_tta_pipeline(pipeline: List[dict]) -> List[dict]:
    """The test pipeline with its last step (the packing) behind a horizontal-flip ``TestTimeAug``."""
    return [*pipeline[:-1], dict(type='TestTimeAug', transforms=[[dict(type='RandomFlip', prob=1.),
                                                                   dict(type='RandomFlip', prob=0.)],
                                                                  [pipeline[-1]]])]


def apply_test_flags(cfg: Config, args: argparse.Namespace, filename: str) -> None:
    """The hosts' test flags on ``cfg`` as each host's ``test.py`` applies them: ``--show``,
    ``--show-dir``, ``--wait-time``, ``--interval``, ``--tta``, ``--no-pin-memory`` and mmseg's
    ``--out`` (the predicted maps' folder). mmdet's and mmpretrain's ``--out`` need the Runner:
    :func:`add_out_dumper`.

    Raises:
        ValueError: a config that cannot do what a flag asks, naming what is missing.
    """
    scope = check_scope(cfg, filename)
    if args.show or args.show_dir:
        hook = cfg.get('default_hooks', {}).get('visualization')
        if hook is None:
            raise ValueError(f'--show/--show-dir: {filename} has no default_hooks.visualization')
        if scope == 'mmpretrain':
            hook.update(enable=True, out_dir=args.show_dir, show=args.show, wait_time=args.wait_time,
                        interval=args.interval)
        else:
            hook.update(draw=True, show=args.show, wait_time=args.wait_time)
            if args.show_dir:
                hook.test_out_dir = args.show_dir
    if args.tta:
        if 'tta_model' not in cfg and scope not in TTA_MODELS:
            raise ValueError(f'--tta: {filename} has no tta_model (mmseg configs name one, e.g. SegTTAModel)')
        dataset = cfg.test_dataloader.dataset
        while 'dataset' in dataset:
            dataset = dataset.dataset
        if 'tta_pipeline' not in cfg and scope == 'mmseg':
            raise ValueError(f'--tta: {filename} has no tta_pipeline (mmseg dataset bases define one)')
        cfg.tta_model = cfg.get('tta_model') or TTA_MODELS[scope]
        cfg.tta_model.module = cfg.model
        dataset.pipeline = cfg.get('tta_pipeline') or flip_tta_pipeline(dataset.pipeline)
        cfg.model = cfg.tta_model
    if args.out and scope == 'mmseg':
        cfg.test_evaluator.update(output_dir=args.out, keep_results=True)
    if args.out and scope != 'mmseg' and not args.out.endswith(('.pkl', '.pickle')) and args.out_item != 'metrics':
        raise ValueError(f'--out {args.out}: expected a .pkl or .pickle file for the predictions')
    for loader in _loaders(cfg):
        if args.no_pin_memory:
            loader.pin_memory = False


def add_out_dumper(runner, args: argparse.Namespace, scope: str) -> None:
    """mmdet's and mmpretrain's ``--out``: the predictions dumped by a metric appended to the test
    evaluator (mmdet's ``DumpDetResults``, mmengine's ``DumpResults``), unless ``--out-item metrics``."""
    if not args.out or scope == 'mmseg' or args.out_item == 'metrics':
        return
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    else:
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
