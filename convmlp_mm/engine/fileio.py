"""Checkpoint files that are complete or absent: :class:`AtomicLocalBackend`, an mmengine file
backend registered as ``'atomic_local'``.

mmengine's ``LocalBackend.put``/``put_text`` (how checkpoints are written) open the destination
and write into it, so a job killed while saving, or a full disk, leaves a truncated checkpoint
under its final name. This backend writes a temporary file in the same folder, flushes it to disk
and renames it over the destination. A leftover ``.NAME.partial-PID`` file marks an interrupted
write. A run selects it for its checkpoints with one line (``configs/_base_/convmlp_runtime.py``)::

    default_hooks = dict(checkpoint=dict(backend_args=dict(backend='atomic_local')))
"""
import os
import os.path as osp
from typing import Union

from mmengine.fileio import LocalBackend, register_backend


def write_atomically(filepath: Union[str, os.PathLike], data: Union[bytes, str], mode: str, **open_kwargs) -> None:
    """Writes ``data`` to ``filepath`` through a temporary file renamed over it when complete."""
    filepath = str(filepath)
    folder, name = osp.split(osp.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    partial = osp.join(folder, f'.{name}.partial-{os.getpid()}')
    try:
        with open(partial, mode, **open_kwargs) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, filepath)
    except BaseException:
        if osp.exists(partial):
            os.remove(partial)
        raise


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose writes (``put``, ``put_text``) are atomic."""

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        write_atomically(filepath, obj, 'wb')

    def put_text(self, obj: str, filepath: Union[str, os.PathLike], encoding: str = 'utf-8') -> None:
        write_atomically(filepath, obj, 'w', encoding=encoding)


register_backend('atomic_local', AtomicLocalBackend)
