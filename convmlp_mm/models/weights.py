"""Reading weights with torch alone: the weights-only reader of the models layer (timm's
``pretrained=True``, :meth:`~convmlp_mm.models.convmlp.ConvMLP.load_pretrained`) and the
state-dict checks every loader of the package shares.

:func:`read_checkpoint` reads with ``torch.load(weights_only=True)``: tensors, containers and
what the user allowed with ``torch.serialization.add_safe_globals``; nothing a file names can
run; the globals a file names are read (with :mod:`pickletools`) and refused by name before
anything is unpickled. The published ImageNet checkpoints are plain state dicts and load this way. Checkpoints
written by mmengine runs hold mmengine objects as well; with mmengine installed,
:mod:`convmlp_mm.engine.checkpoint` reads those with its allowlist.
"""
import hashlib
import io
import os
import os.path as osp
import pickletools
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from typing import Any, Dict, List, Optional, Union

import torch
import torch.nn as nn

from ..compat import user_safe_globals

#: Keys of a classification checkpoint that belong to its head, not to the backbone.
HEAD_PREFIXES = ('norm.', 'head.')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, is refused, or does not fit; the message names the file."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint file that does not exist (also a ``FileNotFoundError``)."""


def file_sha256(path: str) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(source: Union[str, bytes], sha256: Optional[str], filename: str) -> None:
    """Raises :class:`CheckpointError` unless ``source`` (a path, or a file's bytes) has the SHA-256
    ``sha256`` (None: no check)."""
    if sha256 is None:
        return
    digest = file_sha256(source) if isinstance(source, str) else hashlib.sha256(source).hexdigest()
    if digest != sha256.lower():
        raise CheckpointError(f'cannot load checkpoint {filename!r}: its SHA-256 is {digest}; expected '
                              f'{sha256.lower()} (the file changed, or the hash is of another file)')


def cached_path(url: str, model_dir: Optional[str] = None) -> str:
    """Where ``url`` is kept: ``model_dir`` (default torch's hub cache, ``TORCH_HOME/hub/checkpoints``)
    and the URL's file name."""
    folder = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    return osp.join(folder, osp.basename(url.split('?')[0]) or 'checkpoint.pth')


def fetch_url(url: str, model_dir: Optional[str] = None) -> str:
    """The :func:`cached_path` of ``url``, downloaded first unless it is there."""
    path = cached_path(url, model_dir)
    if not osp.isfile(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
        torch.hub.download_url_to_file(url, path, progress=False)  # a temporary file, then renamed
    return path


def local_copy(filename: str) -> str:
    """``filename`` itself, or for an http(s) URL its copy in torch's hub cache (downloaded once).

    Raises:
        CheckpointNotFoundError: a local file that does not exist.
    """
    if filename.startswith(('http://', 'https://')):
        return fetch_url(filename)
    path = osp.expanduser(filename)
    if not osp.isfile(path):
        raise CheckpointNotFoundError(f'cannot load checkpoint {filename!r}: no such file; expected the path of '
                                      'a checkpoint file or an http(s) URL')
    return path


# ------------------------------------------------------------------ the globals a file names
def python3_name(module: str, name: str) -> str:
    """``module.name`` as the unpickler resolves it: protocol 2 writes Python 2 names
    (``__builtin__.eval``) that ``pickle`` maps back."""
    module, name = NAME_MAPPING.get((module, name), (IMPORT_MAPPING.get(module, module), name))
    return f'{module}.{name}'


def _streams(data: Union[str, bytes]):
    """Each pickle of a torch file (a path, or its bytes): the zip format's ``data.pkl`` (read
    alone), or the legacy format's five consecutive pickles (magic number, protocol, system info,
    object, storage keys; then raw data)."""
    source = data if isinstance(data, str) else io.BytesIO(data)
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            yield from (archive.read(name) for name in archive.namelist() if name.endswith('data.pkl'))
        return
    if isinstance(data, str):
        with open(data, 'rb') as f:
            data = f.read()
    stream = io.BytesIO(data)
    for _ in range(5):
        start, end = stream.tell(), None
        try:
            for opcode, _, pos in pickletools.genops(stream):
                if opcode.name == 'STOP':
                    end = pos + 1
                    break
        except (ValueError, EOFError):  # not (or no longer) a pickle
            pass
        if end is None:
            return
        yield data[start:end]
        stream.seek(end)


def checkpoint_globals(data: Union[str, bytes]) -> List[str]:
    """Every global (``module.name``) the pickles of a torch checkpoint (a path, or its bytes)
    name, without unpickling."""
    names = []
    for stream in _streams(data):
        pushed, memo = [None], {}  # what each opcode pushed: the string, or None for anything else
        for opcode, arg, _ in pickletools.genops(stream):
            if opcode.name == 'GLOBAL':
                names.append(python3_name(*arg.split(' ', 1)))
            elif opcode.name == 'STACK_GLOBAL':  # protocol 4: module and name are the last two pushes
                names.append(f'{pushed[-2]}.{pushed[-1]}' if len(pushed) > 2 and None not in pushed[-2:]
                             else '<a global whose name is computed>')
            if opcode.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8', 'UNICODE'):
                pushed.append(arg)
            elif opcode.name in ('BINPUT', 'LONG_BINPUT', 'PUT'):
                memo[arg] = pushed[-1]
            elif opcode.name == 'MEMOIZE':
                memo[len(memo)] = pushed[-1]
            elif opcode.name in ('BINGET', 'LONG_BINGET', 'GET'):
                pushed.append(memo.get(arg))
            elif opcode.stack_after:
                pushed.append(None)
    return list(dict.fromkeys(names))


def pickled_strings(data: Union[str, bytes]) -> set:
    """The strings the pickles of a torch checkpoint (a path, or its bytes) hold, its dict keys
    among them, without unpickling."""
    found = set()
    for stream in _streams(data):
        found.update(arg for opcode, arg, _ in pickletools.genops(stream)
                     if opcode.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8', 'UNICODE'))
    return found


def weights_only_global(full: str) -> Any:
    """What ``module.name`` loads as under torch's weights-only unpickler (its own globals and the
    user's ``add_safe_globals``); None when that unpickler refuses it."""
    from torch import _weights_only_unpickler
    found = _weights_only_unpickler._get_allowed_globals().get(full)
    return found if found is not None else user_safe_globals().get(full)


def unsafe_globals(data: Union[str, bytes], allowed: Optional[Dict[str, Any]] = None) -> List[str]:
    """The globals a torch file (a path, or its bytes) names that neither torch's weights-only
    unpickler (with the user's safe globals) nor ``allowed`` resolves."""
    allowed = allowed or {}
    storage = ('torch', 'torch.storage', 'torch.cuda')
    return [name for name in checkpoint_globals(data) if name not in allowed and weights_only_global(name) is None
            and not (name.rsplit('.', 1)[0] in storage and name.endswith('Storage'))]


# ----------------------------------------------------------------------------- reading
def read_checkpoint(filename: str, map_location: Any = 'cpu', sha256: Optional[str] = None) -> Any:
    """Reads a checkpoint (a path or an http(s) URL) weights-only, with torch alone.

    Args:
        filename (str): A local file or an http(s) URL (cached in torch's hub folder).
        map_location: As for :func:`torch.load`.
        sha256 (str, optional): The file's expected SHA-256, checked before it is unpickled.

    Raises:
        CheckpointNotFoundError: no such file. CheckpointError: another SHA-256, a download that
            failed, or a file torch's weights-only unpickler refuses or cannot read.
    """
    try:
        path = local_copy(filename)
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise CheckpointError(f'cannot load checkpoint {filename!r}: cannot download it ({error})') from error
    check_sha256(path, sha256, filename)
    refused = unsafe_globals(path)
    if refused:  # named before anything is unpickled (torch's message names only the last part)
        raise CheckpointError(f'cannot load checkpoint {filename!r}: refused global(s) {", ".join(refused)} '
                              '(unpickling them could run code); expected a state dict of tensors. A class you '
                              'trust can be allowed with torch.serialization.add_safe_globals')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        cause = next((line for line in lines if 'WeightsUnpickler error' in line or 'Unsupported' in line), lines[0])
        raise CheckpointError(f'cannot load checkpoint {filename!r} weights-only: {cause}; expected a state dict '
                              'written by torch.save (a checkpoint of an mm run reads with mmengine installed, '
                              'through convmlp_mm.engine.checkpoint; a class you trust can be allowed with '
                              'torch.serialization.add_safe_globals)') from error


def unwrap_state_dict(checkpoint: object, filename: str = '<checkpoint>') -> Dict[str, torch.Tensor]:
    """The state dict of a checkpoint: unwraps ``state_dict``/``model`` and strips ``module.``.

    Raises:
        CheckpointError: the file holds no state dict.
    """
    state = checkpoint
    for wrapper in ('state_dict', 'model'):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f'checkpoint {filename!r} holds no state dict (got {type(state).__name__}); expected '
                              "a dict of tensors, or one under 'state_dict' or 'model'")
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def backbone_state_dict(checkpoint: object, filename: str = '<checkpoint>') -> Dict[str, torch.Tensor]:
    """The backbone's part of any checkpoint we accept: the unwrapped state dict's
    ``backbone.*`` keys when there are any, else all but the classification head (``norm.*``,
    ``head.*``)."""
    state = unwrap_state_dict(checkpoint, filename)
    if any(k.startswith('backbone.') for k in state):
        return {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}


def prefixed_state_dict(checkpoint: object, prefix: str, filename: str = '<checkpoint>') -> Dict[str, torch.Tensor]:
    """The unwrapped state dict's keys under ``prefix``, without it (mmengine's ``Pretrained``
    init with ``prefix``).

    Raises:
        CheckpointError: no key starts with ``prefix``.
    """
    state = unwrap_state_dict(checkpoint, filename)
    prefix = prefix if prefix.endswith('.') else prefix + '.'
    taken = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not taken:
        tops = sorted({k.split('.')[0] + '.' for k in state})
        raise CheckpointError(f'checkpoint {filename!r} has no key under prefix {prefix!r}: its keys start with '
                              f'{", ".join(tops[:10])}')
    return taken


def load_state_dict_exactly(module: nn.Module, state: Dict[str, torch.Tensor], filename: str) -> None:
    """``module.load_state_dict(state)`` that reports every problem at once, with the file."""
    check_state_dict_fits(module, state, filename)
    module.load_state_dict(state, strict=True)


def check_state_dict_fits(module: nn.Module, state: Dict[str, torch.Tensor], filename: str) -> None:
    """Raises :class:`CheckpointError` listing missing and unexpected keys and shape mismatches
    (key: both shapes) unless ``state`` fits ``module`` exactly."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        problems = [f'{title} ({len(keys)}): {", ".join(keys[:20])}{" ..." if len(keys) > 20 else ""}'
                    for title, keys in (('missing keys', missing), ('unexpected keys', unexpected),
                                        ('shape mismatches', mismatched)) if keys]
        if not set(own) & set(state):
            problems.append(f'none of its keys is a {type(module).__name__} key: expected a published '
                            f'{type(module).__name__} classification checkpoint, or a classifier, detector or '
                            f'segmentor of ours with this backbone (keys backbone.*)')
        arch = getattr(module, 'arch', None)
        raise CheckpointError(f'checkpoint {filename!r} does not fit {type(module).__name__}'
                              f'{f" (arch {arch})" if arch else ""}:\n  ' + '\n  '.join(problems))
