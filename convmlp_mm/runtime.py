"""Small helpers of the entry points in ``tools/``."""
from mmengine.config import Config

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
