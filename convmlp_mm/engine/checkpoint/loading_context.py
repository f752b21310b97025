""":func:`safe_checkpoint_loading` and :class:`SafeCheckpointLoadHook`: mmengine's own
``CheckpointLoader`` reads through :data:`~.schemes.LOADERS` for their duration, and is as it was
afterwards."""
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Union

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner.checkpoint import CheckpointLoader

from .schemes import LOADERS, explain_load_error
from .trust import _TRUSTED, trust_checkpoints


def _checkpoint_loader_load(cls, filename: str, map_location=None, logger='current') -> Any:
    """``CheckpointLoader.load_checkpoint`` inside :func:`safe_checkpoint_loading`: mmengine's
    scheme lookup and log line, errors as :class:`CheckpointError` naming the file."""
    loader = cls._get_checkpoint_loader(filename)
    print_log(f'Loads checkpoint by {loader.__name__[10:]} backend from path: {filename}', logger=logger)
    try:
        return loader(filename, map_location)
    except Exception as error:
        raise explain_load_error(str(filename), error) from error


_MMENGINE_SCHEMES = 'mmengine.runner.checkpoint'  # the module of mmengine's built-in loaders
# What each open safe_checkpoint_loading context restores when it closes (the state it found),
# outermost first.
_OPEN_CONTEXTS: List[dict] = []


def _close_context(found: dict, inner_too: bool) -> None:
    """Closes the open context that found ``found``: with ``inner_too``, it and those opened inside
    it, restoring ``found``; otherwise it alone, and the next context restores ``found`` instead."""
    index = next((i for i, entry in enumerate(_OPEN_CONTEXTS) if entry is found), None)
    if index is None:  # closed with an enclosing context
        return
    if not inner_too and index < len(_OPEN_CONTEXTS) - 1:
        del _OPEN_CONTEXTS[index]
        _OPEN_CONTEXTS[index].update(found)
        return
    del _OPEN_CONTEXTS[index:]
    for prefix, loader in LOADERS.items():  # ours back to what was there; anything else stays
        if CheckpointLoader._schemes.get(prefix) is loader and prefix in found['schemes']:
            CheckpointLoader._schemes[prefix] = found['schemes'][prefix]
    CheckpointLoader.load_checkpoint = found['method']
    _TRUSTED.clear()
    _TRUSTED.update(found['trusted'])


@contextmanager
def safe_checkpoint_loading(trusted: Optional[List[Union[str, dict]]] = None) -> Iterator[None]:
    """Inside: every read through mmengine's ``CheckpointLoader`` (``load_from``, ``resume``,
    ``init_cfg`` Pretrained of host models, mmengine's ``load_checkpoint``) goes through
    :func:`load_safely`. mmengine's own schemes are swapped for :data:`LOADERS` and its
    ``load_checkpoint`` for one whose errors name the file; schemes other packages registered are
    left as they are. On exit everything is as it was, including schemes registered inside, and
    contexts opened inside and left open (a hook's, in a run that raised) are closed too. A context
    left open and collected later closes alone: contexts opened since then stay as they are.

    Args:
        trusted (list, optional): ``trusted_checkpoints`` entries (see :func:`trust_checkpoints`),
            trusted for the duration only.
    """
    found = dict(schemes=dict(CheckpointLoader._schemes), method=CheckpointLoader.__dict__['load_checkpoint'],
                 trusted=dict(_TRUSTED))
    _OPEN_CONTEXTS.append(found)
    try:
        trust_checkpoints(trusted or [])
        for prefix, loader in LOADERS.items():
            if getattr(found['schemes'].get(prefix), '__module__', None) == _MMENGINE_SCHEMES:
                CheckpointLoader._schemes[prefix] = loader
        CheckpointLoader.load_checkpoint = classmethod(_checkpoint_loader_load)
        yield
    except GeneratorExit:  # collected while open
        _close_context(found, inner_too=False)
        raise
    except BaseException:
        _close_context(found, inner_too=True)
        raise
    else:
        _close_context(found, inner_too=True)


@HOOKS.register_module()
class SafeCheckpointLoadHook(Hook):
    """Reads every checkpoint of the run weights-only (:func:`safe_checkpoint_loading`): entered
    in ``before_run``, before mmengine initialises weights, loads ``load_from`` or resumes, and
    left in ``after_run``. One line in ``custom_hooks`` (``configs/_base_/convmlp_runtime.py``)::

        custom_hooks = [dict(type='SafeCheckpointLoadHook')]

    mmengine calls no hook after a run raised: the resumable loops call ``after_run_raised``,
    which leaves the context too; a run that raises in mmengine's own loops, or before its loop
    starts (loading a checkpoint), leaves the loaders installed until the process ends, so a
    long-lived process (a notebook, a service) runs ``runner.train()`` inside
    :func:`safe_checkpoint_loading`, which restores them either way.

    Args:
        trusted (list, optional): Checkpoints read with a full unpickler instead (paths, URLs
            or ``dict(file=..., sha256=...)``), as the ``trusted_checkpoints`` config key.
    """
    priority = 'VERY_HIGH'

    def __init__(self, trusted: Optional[List[Union[str, dict]]] = None) -> None:
        trust_checkpoints(trusted or [], check_only=True)
        self.trusted = list(trusted or [])
        self._context = None

    def before_run(self, runner) -> None:
        if self._context is None:
            self._context = safe_checkpoint_loading(self.trusted)
            self._context.__enter__()

    def after_run(self, runner) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)

    def after_run_raised(self, runner) -> None:
        self.after_run(runner)
