"""CPU memory reuse for large activations: glibc's allocator tuned to keep freed blocks, as
PyTorch's CUDA caching allocator does on a GPU. A process-wide setting that the tools choose
(``tools/train.py``, ``test.py``, ``infer.py``, ``benchmark.py``); nothing calls it on import."""
import ctypes
import ctypes.util


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Lets the CPU allocator reuse freed activation memory, as PyTorch's CUDA caching allocator
    does on a GPU. Called by the tools in ``tools/``; call it in your own scripts for the same
    effect. Process-wide; a no-op (returning False) where the C library is not glibc.

    glibc serves every block above 32 MiB with a fresh ``mmap`` and returns it to the system
    when freed, so a large activation (a 1-2 megapixel image gives many) is page-faulted and
    zeroed again on every pass: measured here, time per megapixel of the ConvMLP-S forward
    rose by about 25% from 0.5 to 2 megapixels. Raising the mmap and trim thresholds to
    ``limit_bytes`` keeps up to that much freed memory in the process for reuse; the cost
    becomes linear in pixels again.

    Args:
        limit_bytes (int): Blocks up to this size come from the reusable heap, and up to this
            much free memory is kept at its top.
    """
    name = ctypes.util.find_library('c')
    libc = ctypes.CDLL(name) if name else None
    mallopt = getattr(libc, 'mallopt', None)
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, limit_bytes)) and bool(mallopt(m_trim_threshold, limit_bytes))
