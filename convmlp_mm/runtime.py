"""Small helpers of the entry points in ``tools/``."""
import os.path as osp
from typing import Optional

from mmengine.config import Config

from .data.checks import DatasetError, check_datasets

#: The libraries a config can belong to (its ``default_scope``).
SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


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
    """Switches the config's optimizer wrapper to mixed precision (``AmpOptimWrapper``)."""
    wrapper = cfg.optim_wrapper
    if wrapper.get('type') == 'AmpOptimWrapper':
        return
    if wrapper.get('type', 'OptimWrapper') != 'OptimWrapper':
        raise ValueError(f"--amp needs optim_wrapper.type='OptimWrapper', not {wrapper.type!r}")
    wrapper.update(type='AmpOptimWrapper', loss_scale='dynamic')


def load_config(filename: str, options: dict, launcher: str, work_dir: Optional[str]) -> Config:
    """The config of ``tools/train.py`` and ``tools/test.py``: ``--cfg-options`` merged in, its
    scope and datasets checked (see :func:`~convmlp_mm.data.checks.check_datasets`), and its
    launcher and work dir (default ``work_dirs/CONFIG_NAME``) set.

    Raises:
        ValueError: unknown scope; :class:`DatasetError`: a dataset that cannot be used.
    """
    cfg = Config.fromfile(filename)
    cfg.merge_from_dict(options)
    check_scope(cfg, filename)
    check_datasets(cfg)
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join('work_dirs', osp.splitext(osp.basename(filename))[0])
    return cfg


__all__ = ['SCOPES', 'DatasetError', 'check_scope', 'enable_amp', 'load_config']
