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

The parts: :mod:`.allowlist` (what a file may name), :mod:`.trust` (files opted out of it),
:mod:`.safe_load` (:func:`load_safely`), :mod:`.download` (URLs), :mod:`.schemes` (one loader
per ``CheckpointLoader`` scheme, :func:`load_checkpoint`) and :mod:`.loading_context`
(:func:`safe_checkpoint_loading`, :class:`SafeCheckpointLoadHook`).
"""
from ...models.weights import CheckpointError, CheckpointNotFoundError, checkpoint_globals
from .allowlist import ALLOWED_ATTRIBUTES, ALLOWED_GLOBALS, refused_globals, restricted_getattr
from .download import download
from .loading_context import SafeCheckpointLoadHook, safe_checkpoint_loading
from .safe_load import load_safely
from .schemes import LOADERS, MODEL_NAME_SCHEMES, explain_load_error, load_checkpoint
from .trust import trust_checkpoint, trust_checkpoints

__all__ = ['ALLOWED_ATTRIBUTES', 'ALLOWED_GLOBALS', 'CheckpointError', 'CheckpointNotFoundError', 'LOADERS',
           'MODEL_NAME_SCHEMES', 'SafeCheckpointLoadHook', 'checkpoint_globals', 'download', 'explain_load_error',
           'load_checkpoint', 'load_safely', 'refused_globals', 'restricted_getattr', 'safe_checkpoint_loading',
           'trust_checkpoint', 'trust_checkpoints']
