"""URL checkpoints downloaded once per cache in a job of one or several nodes."""
import os
import os.path as osp
from typing import Optional

from ...models.weights import cached_path, fetch_url


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
