"""Our loader for each scheme of mmengine's ``CheckpointLoader`` (:data:`LOADERS`), all reading
through :func:`~.safe_load.load_safely`; :func:`load_checkpoint` for one file, and
:func:`explain_load_error`, the one error for a file that could not be read."""
import os.path as osp
import re
from typing import Any, Callable, Dict, Optional

from mmengine.runner import checkpoint as mm_checkpoint

from ...models.weights import CheckpointError, CheckpointNotFoundError
from .download import download
from .safe_load import load_safely


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
