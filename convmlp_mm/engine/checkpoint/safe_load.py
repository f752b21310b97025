""":func:`load_safely`, the one reader behind every checkpoint read of the engine layer: the file's
globals are checked with :mod:`pickletools` before anything is unpickled, then unpickled with the
allowlist in place for this load only (torch's ``safe_globals``; on older torch a restricted
unpickler as ``torch.load``'s ``pickle_module``)."""
import io
import logging
import pickle
import threading
from typing import Any, BinaryIO, Optional, Union

import torch
from mmengine.logging import HistoryBuffer, print_log

from ...compat import HAS_SAFE_GLOBALS_BY_NAME
from ...models.weights import CheckpointError, check_sha256, local_copy, python3_name
from .allowlist import ALLOWED_ATTRIBUTES, ALLOWED_GLOBALS, _resolve, refused_globals
from .trust import _TRUSTED, _key, _opt_in_hint


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
    __name__ = 'convmlp_mm.engine.checkpoint.safe_load._RestrictedPickle'

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
