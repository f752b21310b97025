"""Feature detection, in one place: what the installed torch (and CPU) can do. Nothing here
changes anything; every answer is computed once, at import, from torch alone.

Supported range (docs/install.md): torch 2.1 to 2.14, numpy 1.26 and 2.x.

- :func:`is_autocast_enabled` -- ``torch.is_autocast_enabled(device_type)`` exists since
  torch 2.4; before, CPU autocast had ``torch.is_autocast_cpu_enabled()`` and the argument-free
  call meant CUDA.
- :func:`is_compiling` -- whether torch.compile or torch.export is tracing the caller:
  ``torch.compiler.is_compiling`` (torch 2.3 and later, :data:`HAS_IS_COMPILING`); False before.
- :data:`HAS_EXPORT_DIMS`, :data:`HAS_EXPORT_AUTO_DIMS` -- ``torch.export.Dim`` (dynamic sizes
  of an exported program, torch 2.2 and later) and ``Dim.AUTO`` (sizes found dynamic by tracing,
  torch 2.6 and later).
- :data:`CPU_AUTOCAST_DTYPES` -- CPU autocast takes float16 too since torch 2.2 (torch 2.1:
  "AutocastCPU only support Bfloat16"); found by trying it.
- :data:`HAS_SAFE_GLOBALS_BY_NAME` -- ``torch.serialization.safe_globals`` with ``(object,
  'module.name')`` entries (torch 2.6 and later); before, :mod:`convmlp_mm.engine.checkpoint`
  passes a restricted unpickler as ``torch.load``'s ``pickle_module``.
- :func:`user_safe_globals` -- what the user allowed with ``torch.serialization.add_safe_globals``
  (torch 2.4 and later; nothing before).
- :func:`numpy_core` -- numpy 2 moved ``numpy.core`` to ``numpy._core`` (the old name warns).
- :func:`disabled_grad_scaler` -- ``torch.amp.GradScaler`` exists since torch 2.3; before, only
  ``torch.cuda.amp.GradScaler``.
- :data:`CPU_NATIVE_BF16` -- whether this CPU runs bfloat16 matrix products natively (oneDNN's
  check: AVX512-BF16 or AMX). Without them, bfloat16 convolutions and matrix products fall back
  to reference loops, about 10x slower than float32 (measured on an AVX2 CPU), so the tools warn
  before they run bfloat16 there.
- :data:`HAS_MMCV` -- whether mmcv is installed (found, not imported): the registered backbones
  build their norm layers through mmcv's registry, else with torch's layers.
- :func:`loaded_classes` -- host classes that prepared models treat specially (mmcv's
  ``RoIAlign``), taken from the modules the process has already imported: a model that contains
  one has imported its module, and the models layer imports no host.
- :data:`ONNX_DYNAMO_EXPORTER`, :func:`onnx_export_kwargs` -- ``torch.onnx.export`` takes
  ``dynamo`` since torch 2.5 and defaults it to True since 2.9 (the TorchScript-based exporter is
  deprecated there): we export with the dynamo exporter from torch 2.9 on, with the TorchScript
  one before.
"""
import importlib.util
import inspect
import sys
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple

import torch


def _torch_version() -> tuple:
    """``(major, minor)`` of the installed torch (``'2.1.2+cu121'`` -> ``(2, 1)``)."""
    return tuple(int(part) for part in torch.__version__.split('+')[0].split('.')[:2])


TORCH_VERSION = _torch_version()


def _device_autocast_query() -> bool:
    try:
        torch.is_autocast_enabled('cpu')
        return True
    except TypeError:  # torch < 2.4: no device argument
        return False


_HAS_DEVICE_AUTOCAST_QUERY = _device_autocast_query()


def is_autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``'cpu'``, ``'cuda'``, ...), on every torch;
    False for device types autocast does not know (``'meta'``, where timm builds models)."""
    if device_type == 'meta':
        return False
    if _HAS_DEVICE_AUTOCAST_QUERY:
        return torch.is_autocast_enabled(device_type)
    if device_type == 'cpu':
        return torch.is_autocast_cpu_enabled()
    if device_type == 'cuda':
        return torch.is_autocast_enabled()
    return False


def is_compiling() -> bool:
    """Whether torch.compile (dynamo) or torch.export is tracing the caller: then sizes may be
    symbolic, and code that branches on them guards (or specialises) the traced program.
    ``torch.compiler.is_compiling`` since torch 2.3; False before (torch 2.1 and 2.2 trace the
    eager branches)."""
    if HAS_IS_COMPILING:
        return torch.compiler.is_compiling()
    return False


#: ``torch.compiler.is_compiling`` (torch 2.3 and later), which torch.export answers too.
HAS_IS_COMPILING = hasattr(getattr(torch, 'compiler', None), 'is_compiling')

#: ``torch.export.Dim``: dynamic batch, height and width of an exported program (torch 2.2 and later).
HAS_EXPORT_DIMS = hasattr(getattr(torch, 'export', None), 'Dim')
#: ``torch.export.Dim.AUTO``: sizes that tracing finds dynamic (torch 2.6 and later).
HAS_EXPORT_AUTO_DIMS = HAS_EXPORT_DIMS and hasattr(torch.export.Dim, 'AUTO')


def _cpu_autocast_dtypes() -> tuple:
    dtypes = []
    for dtype in (torch.bfloat16, torch.float16):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('error')  # torch 2.1 warns and disables instead of raising
                with torch.autocast('cpu', dtype=dtype):
                    pass
            dtypes.append(dtype)
        except (RuntimeError, UserWarning):
            pass
    return tuple(dtypes)


CPU_AUTOCAST_DTYPES = _cpu_autocast_dtypes()


#: ``(object, 'module.name')`` entries in ``torch.serialization.safe_globals`` (torch 2.6 and later;
#: read from the version: trying it would replace torch's set of safe globals).
HAS_SAFE_GLOBALS_BY_NAME = hasattr(torch.serialization, 'safe_globals') and TORCH_VERSION >= (2, 6)


def user_safe_globals() -> Dict[str, Any]:
    """``module.name`` -> object of every global the user allowed for weights-only loading
    (``torch.serialization.add_safe_globals`` / ``safe_globals``); empty before torch 2.4."""
    if not hasattr(torch.serialization, 'get_safe_globals'):
        return {}
    from torch import _weights_only_unpickler
    return dict(_weights_only_unpickler._get_user_allowed_globals())


def numpy_core() -> str:
    """The name of numpy's core package: ``numpy._core`` on numpy 2, ``numpy.core`` before."""
    import numpy as np
    return 'numpy._core' if int(np.__version__.split('.')[0]) >= 2 else 'numpy.core'


def disabled_grad_scaler():
    """A disabled ``GradScaler`` (``torch.amp`` since torch 2.3, ``torch.cuda.amp`` before)."""
    if hasattr(torch.amp, 'GradScaler'):
        return torch.amp.GradScaler('cpu', enabled=False)
    return torch.cuda.amp.GradScaler(enabled=False)


def _cpu_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


CPU_NATIVE_BF16 = _cpu_native_bf16()


def emulated_bf16_warning() -> Optional[str]:
    """A warning to print before bfloat16 runs on this machine's CPU, or None where the CPU has
    native bfloat16 (or a GPU will run it)."""
    if CPU_NATIVE_BF16 or torch.cuda.is_available():
        return None
    capability = getattr(getattr(torch.backends, 'cpu', None), 'get_cpu_capability', lambda: 'unknown')()
    return (f'bfloat16 on this CPU ({capability}, no AVX512-BF16/AMX) runs in reference loops, not oneDNN: '
            'expect it to be 10x or more slower than float32; drop --amp (or use OptimWrapper) for speed')


def cpu_int8_capability() -> str:
    """The CPU's int8 matrix-product instructions, best first: ``'AMX-INT8'``, ``'AVX512-VNNI'``,
    ``'AVX-VNNI'``, else ``'AVX2'`` or ``'none'`` (Linux's ``/proc/cpuinfo`` flags; ``'unknown'``
    elsewhere). VNNI and AMX multiply int8 in one instruction; AVX2 needs three."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = set(next((line for line in f if line.startswith('flags')), '').split())
    except OSError:
        return 'unknown'
    names = (('amx_int8', 'AMX-INT8'), ('avx512_vnni', 'AVX512-VNNI'), ('avx_vnni', 'AVX-VNNI'), ('avx2', 'AVX2'))
    return next((name for flag, name in names if flag in flags), 'none')


#: ``torch.onnx.export(dynamo=True)``: the exporter torch recommends (``torch.export`` then
#: onnxscript), its default since torch 2.9; before, the TorchScript-based one.
ONNX_DYNAMO_EXPORTER = 'dynamo' in inspect.signature(torch.onnx.export).parameters and TORCH_VERSION >= (2, 9)


def onnx_export_kwargs() -> dict:
    """``torch.onnx.export`` arguments that select the exporter of :data:`ONNX_DYNAMO_EXPORTER`."""
    if ONNX_DYNAMO_EXPORTER:
        return dict(dynamo=True, external_data=False)  # one file: our graphs are far below 2 GB
    return dict(dynamo=False) if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}


#: mmcv is installed (found without importing it).
HAS_MMCV = importlib.util.find_spec('mmcv') is not None


#: mmcv's RoI pooling modules whose CPU kernels read the input's memory as contiguous NCHW float32.
NCHW_FLOAT32_OPS = (('mmcv.ops.roi_align', 'RoIAlign'), )


def loaded_classes(names: Sequence[Tuple[str, str]]) -> tuple:
    """The classes ``(module, class)`` of ``names`` whose modules are imported in this process
    (none is imported here)."""
    modules = ((sys.modules.get(module), name) for module, name in names)
    return tuple(getattr(module, name) for module, name in modules if module is not None and hasattr(module, name))
