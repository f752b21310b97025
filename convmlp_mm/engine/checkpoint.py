"""Checkpoint reading that cannot run code, for mmengine runs: :func:`load_safely` and the
:func:`safe_checkpoint_loading` context that puts it behind mmengine's ``CheckpointLoader``.

A ``.pth`` file is a pickle, and unpickling can call any function the file names. mmengine 0.10
reads checkpoints with a plain ``torch.load`` (on torch < 2.6 that runs any pickle; on torch >=
2.6 ``weights_only=True`` refuses mmengine's own checkpoints), and its URL loader reads with
``weights_only=False``. Here a checkpoint may name only:

- the globals of torch's weights-only unpickler (tensors, storages, ``OrderedDict``, ...) and
  those the user allowed with ``torch.serialization.add_safe_globals``, and
- :data:`ALLOWED_GLOBALS`, exactly what the checkpoints of convmlp_mm, mmengine, mmdet, mmseg and
  mmpretrain contain: mmengine's ``HistoryBuffer`` (``message_hub``), numpy arrays, scalars and
  numeric dtypes (``meta``, ``RandomStateHook``'s RNG state, a numpy ``best_score``) under their
  numpy 1 and numpy 2 names, ``_codecs.encode`` (bytes under pickle protocol 2), and
  ``builtins.getattr`` -- replaced by :func:`restricted_getattr`, which returns only
  HistoryBuffer's statistics methods and the OneCycle schedulers' annealing functions.

Anything else stops the load with :class:`CheckpointError` naming the file and every refused
global, before anything is unpickled (the file's globals are read with :mod:`pickletools`), and
again while unpickling (torch's weights-only unpickler with the allowlist in place for this load
only, ``torch.serialization.safe_globals``; on torch without that API, a restricted unpickler
passed as ``torch.load``'s ``pickle_module``). Nothing falls back to unsafe loading by itself;
HistoryBuffer's class-level statistics table is restored after every load. A zip-format file is
read from disk by torch (one copy of its tensors in memory), not read into memory first.

A file you trust can be opted in by name (:func:`trust_checkpoint`, the ``trusted_checkpoints``
config key and ``--trust-checkpoint`` of our tools), optionally pinned to its SHA-256: it is then
read with a full unpickler and a warning naming it.

URLs (``http(s)://``, ``torchvision://``, ``open-mmlab://``, ``mmcls://``) are downloaded into
torch's hub cache once per cache (:func:`download`: each node's local rank 0 first, the other
ranks after it where their cache lacks the file), and read like local files.

Nothing is installed by importing this module. :func:`load_checkpoint` reads one file this way;
:func:`safe_checkpoint_loading` (a ``with`` context) and :class:`SafeCheckpointLoadHook` (a hook
that enters it in ``before_run`` and leaves it in ``after_run``) make mmengine's own
``CheckpointLoader`` read this way for their duration, for the schemes mmengine registered itself
(a scheme another package registered is left to it), and restore mmengine's afterwards.
"""
import importlib
import io
import logging
import os
import os.path as osp
import pickle
import re
import threading
from contextlib import contextmanager
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Union

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer, print_log
from mmengine.optim.scheduler.param_scheduler import OneCycleParamScheduler
from mmengine.registry import HOOKS
from mmengine.runner import checkpoint as mm_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from ..compat import HAS_SAFE_GLOBALS_BY_NAME, numpy_core
from ..models.weights import (CheckpointError, CheckpointNotFoundError, cached_path, check_sha256, checkpoint_globals,
                              fetch_url, local_copy, python3_name, unsafe_globals, weights_only_global)


# -------------------------------------------------------------------------------- the allowlist
#: What ``builtins.getattr`` may fetch while unpickling: HistoryBuffer pickles its statistics
#: methods as ``getattr(HistoryBuffer, 'mean')``, and the OneCycle schedulers their annealing
#: staticmethod as ``getattr(OneCycleParamScheduler, '_annealing_cos')`` (pickle protocol 2).
ALLOWED_ATTRIBUTES: Dict[type, frozenset] = {
    HistoryBuffer: frozenset({'min', 'max', 'current', 'mean'}),
    OneCycleParamScheduler: frozenset({'_annealing_cos', '_annealing_linear'}),
    torch.optim.lr_scheduler.OneCycleLR: frozenset({'_annealing_cos', '_annealing_linear'}),
}


def restricted_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as a checkpoint may use it: only the attributes of :data:`ALLOWED_ATTRIBUTES`."""
    if isinstance(obj, type) and name in ALLOWED_ATTRIBUTES.get(obj, ()):
        return getattr(obj, name)
    what = f'{obj.__module__}.{obj.__qualname__}' if isinstance(obj, type) else type(obj).__name__
    raise pickle.UnpicklingError(f'refused global builtins.getattr({what}, {name!r}): only '
                                 + '; '.join(f'{cls.__name__}.{{{", ".join(sorted(names))}}}'
                                             for cls, names in ALLOWED_ATTRIBUTES.items()) + ' are allowed')


def _numpy_globals() -> Dict[str, Any]:
    """numpy's pickling globals under the numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``)
    names, so that a file written under either loads under either; numeric dtypes only (no object,
    void or structured dtype)."""
    multiarray = importlib.import_module(f'{numpy_core()}.multiarray')
    found = {'numpy.ndarray': np.ndarray, 'numpy.dtype': np.dtype}
    for core in ('numpy.core', 'numpy._core'):
        found[f'{core}.multiarray._reconstruct'] = multiarray._reconstruct
        found[f'{core}.multiarray.scalar'] = multiarray.scalar
    numeric = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
               np.float16, np.float32, np.float64, np.longdouble, np.complex64, np.complex128, np.clongdouble]
    for kind in numeric:
        dtype_class = type(np.dtype(kind))
        if dtype_class is not np.dtype:  # numpy >= 1.25 has one class per dtype (numpy.dtypes.*)
            found[f'numpy.dtypes.{dtype_class.__name__}'] = dtype_class
    return found


def _allowed_globals() -> Dict[str, Any]:
    import _codecs
    import collections
    dtypes = {f'torch.{name}': value for name, value in vars(torch).items() if isinstance(value, torch.dtype)}
    return {
        # what torch >= 2.4's weights-only set has beyond torch 2.1's (mmengine's MultiStepLR keeps a
        # Counter): the same files load on every supported torch
        'collections.Counter': collections.Counter, 'builtins.set': set, 'builtins.bytearray': bytearray,
        'builtins.complex': complex, 'torch.device': torch.device, **dtypes,
        'mmengine.logging.history_buffer.HistoryBuffer': HistoryBuffer,
        'mmengine.optim.scheduler.param_scheduler.OneCycleParamScheduler': OneCycleParamScheduler,
        'torch.optim.lr_scheduler.OneCycleLR': torch.optim.lr_scheduler.OneCycleLR,
        'builtins.getattr': restricted_getattr,
        '_codecs.encode': _codecs.encode,
        **_numpy_globals(),
    }


#: Globals a checkpoint may name beyond torch's weights-only set, each mapped to what it loads as.
ALLOWED_GLOBALS: Dict[str, Any] = _allowed_globals()


def _resolve(full: str) -> Any:
    """What an allowed global loads as (ours, torch's, or the user's ``add_safe_globals``); None
    when it is not allowed."""
    return ALLOWED_GLOBALS.get(full) if full in ALLOWED_GLOBALS else weights_only_global(full)


def refused_globals(data: Union[str, bytes]) -> List[str]:
    """The globals of ``data`` that are neither torch's weights-only ones (the user's included) nor
    :data:`ALLOWED_GLOBALS`."""
    return unsafe_globals(data, ALLOWED_GLOBALS)


# ------------------------------------------------------------------------------ opting in
_TRUSTED: Dict[str, Optional[str]] = {}


def _key(filename: str) -> str:
    return filename if '://' in filename else osp.realpath(osp.expanduser(filename))


def trust_checkpoint(filename: str, sha256: Optional[str] = None, check_only: bool = False) -> None:
    """Opts one file (a path or URL) you trust out of the allowlist: it will be read with a full
    unpickler, which can run code the file names, and a warning naming it is logged. With
    ``sha256`` the file is read only if its SHA-256 is that one."""
    if not isinstance(filename, str) or not filename:
        raise ValueError(f'trusted checkpoint {filename!r} is invalid: expected a file path or URL')
    if sha256 is not None and (not isinstance(sha256, str) or len(sha256) != 64
                               or any(c not in '0123456789abcdef' for c in sha256.lower())):
        raise ValueError(f'sha256={sha256!r} for trusted checkpoint {filename!r} is invalid: '
                         'expected 64 hexadecimal digits')
    if not check_only:
        _TRUSTED[_key(filename)] = sha256.lower() if sha256 else None


def trust_checkpoints(entries: List[Union[str, dict]], check_only: bool = False) -> None:
    """:func:`trust_checkpoint` for each entry of a ``trusted_checkpoints`` config list: a path or
    URL, or ``dict(file=..., sha256=...)``. With ``check_only``, validates the entries only."""
    if not isinstance(entries, (list, tuple)):
        raise ValueError(f'trusted_checkpoints={entries!r} is invalid: expected a list of paths or '
                         "dict(file=..., sha256=...)")
    for entry in entries:
        if isinstance(entry, dict):
            unknown = set(entry) - {'file', 'sha256'}
            if 'file' not in entry or unknown:
                raise ValueError(f'trusted_checkpoints entry {entry!r} is invalid: expected the keys '
                                 "'file' and optionally 'sha256'")
            trust_checkpoint(entry['file'], entry.get('sha256'), check_only)
        else:
            trust_checkpoint(entry, check_only=check_only)


def _opt_in_hint(filename: str) -> str:
    return (f'if you trust this file, opt it in: trusted_checkpoints=[dict(file={filename!r}, '
            "sha256='...')] in the config, --trust-checkpoint FILE[:SHA256] for tools/train.py, test.py "
            f'and infer.py, or convmlp_mm.engine.trust_checkpoint({filename!r})')


# ------------------------------------------------------------------------------ loading
_LOCK = threading.Lock()  # safe_globals and HistoryBuffer's table are process-wide


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only torch's weights-only globals and :data:`ALLOWED_GLOBALS`
    (for torch without ``torch.serialization.safe_globals``)."""

    def find_class(self, module: str, name: str) -> Any:
        full = python3_name(module, name)
        found = _resolve(full)
        if found is None:
            raise pickle.UnpicklingError(f'refused global {full}')
        return found


class _RestrictedPickle:
    """What ``torch.load(pickle_module=...)`` needs of a pickle module."""
    Unpickler = _RestrictedUnpickler
    __name__ = 'convmlp_mm.engine.checkpoint._RestrictedPickle'

    @staticmethod
    def load(file: BinaryIO, **kwargs) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


def _unpickle_weights_only(source: Union[str, io.BytesIO], map_location) -> Any:
    if HAS_SAFE_GLOBALS_BY_NAME:
        present = set(torch.serialization.get_safe_globals())  # the caller's own, left as they are
        safe = [(obj, name) for name, obj in ALLOWED_GLOBALS.items() if (obj, name) not in present]
        with torch.serialization.safe_globals(safe):
            return torch.load(source, map_location=map_location, weights_only=True)
    return torch.load(source, map_location=map_location, weights_only=False, pickle_module=_RestrictedPickle)


def load_safely(source: Union[str, bytes], map_location=None, sha256: Optional[str] = None,
                filename: Optional[str] = None) -> Any:
    """Reads a checkpoint without running code: the one loader behind every checkpoint read of
    the engine layer.

    Args:
        source (str | bytes): A local file, or the file's bytes.
        map_location: As for :func:`torch.load`.
        sha256 (str, optional): Expected SHA-256 of the file, checked before anything is unpickled.
        filename (str, optional): The name to report and to look up among trusted files
            (defaults to ``source`` when it is a path; a URL's name when read from the cache).

    Raises:
        CheckpointNotFoundError: no such file (a ``FileNotFoundError``). CheckpointError: the file
            has another SHA-256 or names a global that is not allowed (the message names the file,
            the globals and how to opt in).
    """
    filename = filename or (source if isinstance(source, str) else '<bytes>')
    source = local_copy(source) if isinstance(source, str) else source  # CheckpointNotFoundError
    readable = source if isinstance(source, str) else io.BytesIO(source)
    key = _key(filename)
    trusted = key in _TRUSTED
    check_sha256(source, sha256 or _TRUSTED.get(key), filename)
    if trusted:
        print_log(f'loading trusted checkpoint {filename!r} with a full unpickler: it can run code it '
                  'names', logger='current', level=logging.WARNING)
        return torch.load(readable, map_location=map_location, weights_only=False)
    refused = refused_globals(source)
    if refused:
        raise CheckpointError(f'cannot load checkpoint {filename!r}: refused global(s) {", ".join(refused)} '
                              '(unpickling them could run code); expected tensors, containers, numpy arrays '
                              f'and the mmengine objects our checkpoints hold. {_opt_in_hint(filename)}')
    with _LOCK:
        statistics = dict(HistoryBuffer._statistics_methods)
        try:
            return _unpickle_weights_only(readable, map_location)
        except pickle.UnpicklingError as error:
            refusal = _refusal(error)
            if refusal is None:  # not a refusal: a corrupt file, reported as such by the caller
                raise
            raise CheckpointError(f'cannot load checkpoint {filename!r}: {refusal}. '
                                  f'{_opt_in_hint(filename)}') from error
        finally:
            HistoryBuffer._statistics_methods.clear()
            HistoryBuffer._statistics_methods.update(statistics)
            for name in ALLOWED_ATTRIBUTES[HistoryBuffer]:  # what HistoryBuffer.__init__ registers
                HistoryBuffer._statistics_methods.setdefault(name, getattr(HistoryBuffer, name))


def _refusal(error: Exception) -> Optional[str]:
    """The line of torch's weights-only message (or ours) that names what was refused; None when
    the error refuses nothing (a corrupt file)."""
    markers = ('refused global', 'Unsupported global', 'not an allowed global', 'unrecognized function',
               'Can only create new object', 'Can only build')
    named = [line.strip() for line in str(error).splitlines() if any(m in line for m in markers)]
    return named[0].rstrip('.') if named else None


# ---------------------------------------------------------------------------------- URLs
def download(url: str, model_dir: Optional[str] = None) -> str:
    """The local copy of ``url`` (:func:`~convmlp_mm.models.weights.cached_path`): in a
    distributed run each node's local rank 0 downloads it into its cache while the other ranks
    wait, then any rank whose cache still lacks it (a cache of its own) downloads it too; so one
    download per cache, shared or per node.

    Raises:
        OSError: this rank could not download it (naming the rank and the URL).
    """
    from mmengine.dist import barrier, get_dist_info
    rank, world_size = get_dist_info()
    local_rank = int(os.environ.get('LOCAL_RANK', rank))
    failure = None
    if local_rank == 0:
        try:
            fetch_url(url, model_dir)
        except Exception as error:  # the others must still pass the barrier
            failure = error
    if world_size > 1:
        barrier()
    try:
        if failure is not None:
            raise failure
        return fetch_url(url, model_dir)  # the file, or this rank's own download where its cache lacks it
    except Exception as error:
        raise OSError(f'rank {rank} (local rank {local_rank}) could not download {url} into '
                      f'{osp.dirname(cached_path(url, model_dir))}: {type(error).__name__}: {error}') from error


# --------------------------------------------------------------------- CheckpointLoader schemes
def load_from_local(filename: str, map_location=None) -> Any:
    return load_safely(filename, map_location)


def load_from_http(filename: str, map_location=None, model_dir: Optional[str] = None) -> Any:
    """A URL: its cached copy, read under the URL's name (which is what a trust opt-in names)."""
    return load_safely(download(filename, model_dir), map_location, filename=filename)


def load_from_torchvision(filename: str, map_location=None) -> Any:
    name = filename.split('://', 1)[1]
    return load_from_http(mm_checkpoint.get_torchvision_models()[name], map_location)


def load_from_openmmlab(filename: str, map_location=None) -> Any:
    name = filename.split('://', 1)[1]
    name = mm_checkpoint.get_deprecated_model_names().get(name, name)
    url = mm_checkpoint.get_external_models()[name]
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location)
    return load_safely(osp.join(mm_checkpoint._get_mmengine_home(), url), map_location)


def load_from_mmcls(filename: str, map_location=None) -> Any:
    checkpoint = load_from_http(mm_checkpoint.get_mmcls_models()[filename[len('mmcls://'):]], map_location)
    return mm_checkpoint._process_mmcls_checkpoint(checkpoint)


def load_from_ceph(filename: str, map_location=None, backend: str = 'petrel') -> Any:
    from mmengine.fileio import get_file_backend
    data = get_file_backend(filename, backend_args={'backend': backend}).get(filename)
    return load_safely(data, map_location, filename=filename)


def load_from_pavi(filename: str, map_location=None) -> Any:
    import tempfile
    from pavi import modelcloud
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as folder:
        path = osp.join(folder, model.name)
        model.download(path)
        return load_safely(path, map_location, filename=filename)


#: Our loader for each scheme of mmengine 0.10's ``CheckpointLoader``.
LOADERS: Dict[str, Callable] = {
    '': load_from_local,
    'http://': load_from_http, 'https://': load_from_http,
    'modelzoo://': load_from_torchvision, 'torchvision://': load_from_torchvision,
    'open-mmlab://': load_from_openmmlab, 'openmmlab://': load_from_openmmlab,
    'mmcls://': load_from_mmcls,
    r'(\S+\:)?s3://': load_from_ceph, r'(\S+\:)?petrel://': load_from_ceph,
    'pavi://': load_from_pavi,
}


#: The schemes that name models (``open-mmlab://resnet50_v1c``) and mmengine's table of their names.
MODEL_NAME_SCHEMES: Dict[str, Callable[[], dict]] = {
    'open-mmlab://': lambda: {**mm_checkpoint.get_external_models(), **mm_checkpoint.get_deprecated_model_names()},
    'openmmlab://': lambda: {**mm_checkpoint.get_external_models(), **mm_checkpoint.get_deprecated_model_names()},
    'torchvision://': lambda: mm_checkpoint.get_torchvision_models(),
    'modelzoo://': lambda: mm_checkpoint.get_torchvision_models(),
    'mmcls://': lambda: mm_checkpoint.get_mmcls_models(),
}


def explain_load_error(filename: str, error: BaseException) -> CheckpointError:
    """One error for a checkpoint that could not be read: the file, the cause and what was
    expected; a :class:`CheckpointNotFoundError` for a missing file."""
    if isinstance(error, CheckpointError):
        return error
    if isinstance(error, FileNotFoundError):
        return CheckpointNotFoundError(f'cannot load checkpoint {filename!r}: no such file; expected the path of a '
                                       'checkpoint file or an http(s) URL')
    scheme = filename.split('://', 1)[0] + '://' if '://' in filename else ''
    if isinstance(error, KeyError) and scheme in MODEL_NAME_SCHEMES:
        known = sorted(MODEL_NAME_SCHEMES[scheme]())
        cause = f'{filename[len(scheme):]!r} is not a model name of {scheme}'
        expected = f'one of the {len(known)} names mmengine knows there (e.g. {", ".join(known[:3])}), or a URL'
    elif isinstance(error, RuntimeError) and 'CUDA device' in str(error):
        cause = 'its tensors were saved on a CUDA device and this machine has no GPU'
        expected = ("map_location='cpu' (init_cfg=dict(type='Pretrained', ..., map_location='cpu'), "
                    "load_checkpoint(..., map_location='cpu'))")
    elif isinstance(error, OSError) and '://' in filename:
        cause = f'cannot download it ({type(error).__name__}: {error})'
        expected = 'a reachable URL; or download the file yourself and pass its path'
    elif isinstance(error, OSError):  # permissions, a folder, an I/O error
        cause, expected = f'cannot read it ({type(error).__name__}: {error})', 'a readable checkpoint file'
    else:  # the bytes are there but do not decode (zip reader, unpickler, ...)
        cause = f'the file is truncated or corrupt ({type(error).__name__}: {error})'
        expected = 'a complete file written by torch.save; copy it again or use an earlier checkpoint'
    return CheckpointError(f'cannot load checkpoint {filename!r}: {cause}; expected {expected}')


def _loader_for(filename: str) -> Callable:
    """Our loader for ``filename``'s scheme (the longest matching prefix, as mmengine picks)."""
    for prefix in sorted(LOADERS, key=len, reverse=True):
        if re.match(prefix, filename) is not None:
            return LOADERS[prefix]
    return load_from_local


def load_checkpoint(filename: str, map_location=None, sha256: Optional[str] = None) -> Any:
    """Reads one checkpoint safely (any scheme of :data:`LOADERS`), optionally checking the file's
    SHA-256 before anything is unpickled (local files and http(s) URLs; a URL is checked on its
    downloaded copy). Installs nothing.

    Raises:
        CheckpointNotFoundError: no such file. CheckpointError: anything else, naming the file.
    """
    filename = str(filename)
    try:
        if sha256 is None:
            return _loader_for(filename)(filename, map_location)
        if '://' in filename and not filename.startswith(('http://', 'https://')):
            raise CheckpointError(f'cannot check sha256 of checkpoint {filename!r}: expected a local file or an '
                                  'http(s) URL')
        path = download(filename) if '://' in filename else filename
        return load_safely(path, map_location, sha256=sha256, filename=filename)
    except Exception as error:
        raise explain_load_error(filename, error) from error


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


__all__ = ['ALLOWED_ATTRIBUTES', 'ALLOWED_GLOBALS', 'CheckpointError', 'CheckpointNotFoundError', 'LOADERS',
           'SafeCheckpointLoadHook', 'checkpoint_globals', 'download', 'load_checkpoint', 'load_safely',
           'refused_globals', 'restricted_getattr', 'safe_checkpoint_loading', 'trust_checkpoint',
           'trust_checkpoints']
