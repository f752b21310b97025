"""Publish a training checkpoint: its weights and meta only, readable weights-only by any torch.

    python tools/publish_checkpoint.py work_dirs/demo/epoch_8.pth checkpoints/mask-rcnn_convmlp-s_shapes.pth
    -> checkpoints/mask-rcnn_convmlp-s_shapes-1a2b3c4d.pth

The hosts' ``publish_model.py`` convention: the optimizer, message hub, scheduler and random
state are dropped (and the data preprocessor's buffers, which the config rebuilds), and the
first 8 hex digits of the file's SHA-256 are added to its name. The meta keeps plain Python
values only (numbers, strings, lists, tuples, dicts; numpy scalars and arrays as numbers and
lists), so that ``torch.load(weights_only=True)`` -- what torch >= 2.6 does by default, and so
mmdet's ``DetInferencer``/``init_detector``, mmseg's ``MMSegInferencer``/``init_model`` and
mmpretrain's ``ImageClassificationInferencer`` -- reads the file as it is. The input is read
weights-only (our allowlist of mmengine objects); the output is written atomically.
"""
import argparse
import hashlib
import io
import os
import os.path as osp
import sys

import numpy as np
import torch

from convmlp_mm.engine import load_checkpoint, write_atomically
from convmlp_mm.models.weights import CheckpointError, unwrap_state_dict

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('in_file', help='a checkpoint written by a training run (path or URL)')
parser.add_argument('out_file', help='where the published file goes; -SHA256[:8] is added before .pth')


def plain(value, where: str = 'meta'):
    """``value`` as plain Python values (numpy scalars and arrays converted).

    Raises:
        ValueError: a value of another type, named by its place in the meta.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v, f'{where}[{i}]') for i, v in enumerate(value))
    if isinstance(value, dict):
        return {k: plain(v, f'{where}[{k!r}]') for k, v in value.items()}
    raise ValueError(f'{where} is a {type(value).__module__}.{type(value).__qualname__}: a published checkpoint '
                     'holds plain values only (numbers, strings, lists, tuples, dicts)')


def publish(in_file: str, out_file: str) -> str:
    """Writes the published form of ``in_file`` and returns its path (``out_file`` with the hash)."""
    checkpoint = load_checkpoint(in_file, map_location='cpu')
    state = {k: v for k, v in unwrap_state_dict(checkpoint, in_file).items() if not k.startswith('data_preprocessor.')}
    meta = checkpoint.get('meta', {}) if isinstance(checkpoint, dict) else {}
    buffer = io.BytesIO()
    torch.save(dict(state_dict=state, meta=plain(meta)), buffer)
    data = buffer.getvalue()
    stem = out_file[:-len('.pth')] if out_file.endswith('.pth') else out_file
    final = f'{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth'
    write_atomically(final, data, 'wb')
    return final


def main() -> None:
    args = parser.parse_args()
    try:
        final = publish(args.in_file, args.out_file)
    except (CheckpointError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(1)
    size = os.path.getsize(final) / 2 ** 20
    print(f'{args.in_file} -> {final} ({size:.1f} MiB, weights and meta; sha256 prefix {osp.basename(final)[-12:-4]})')


if __name__ == '__main__':
    main()
