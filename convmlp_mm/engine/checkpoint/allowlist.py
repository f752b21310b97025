"""What a checkpoint may name when it is read without running code: torch's weights-only globals
plus :data:`ALLOWED_GLOBALS` (mmengine's ``HistoryBuffer``, numpy arrays and numeric dtypes under
numpy 1 and 2 names, ``_codecs.encode``, and ``builtins.getattr`` as :func:`restricted_getattr`)."""
import importlib
import pickle
from typing import Any, Dict, List, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.optim.scheduler.param_scheduler import OneCycleParamScheduler

from ...compat import numpy_core
from ...models.weights import unsafe_globals, weights_only_global


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
