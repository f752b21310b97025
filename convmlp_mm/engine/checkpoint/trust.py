"""Files a user trusts, read with a full unpickler (:func:`trust_checkpoint`, the
``trusted_checkpoints`` config key, ``--trust-checkpoint`` of our tools), optionally pinned to
their SHA-256."""
import os.path as osp
from typing import Dict, List, Optional, Union


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
