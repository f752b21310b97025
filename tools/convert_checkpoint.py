"""Convert a published ConvMLP ImageNet checkpoint to our mmpretrain classifier layout (and back).

    python tools/convert_checkpoint.py convmlp_s_imagenet.pth convmlp_s_mmpretrain.pth
    python tools/convert_checkpoint.py convmlp_s_mmpretrain.pth convmlp_s_imagenet.pth --to published

The result is an mm checkpoint (``state_dict`` + ``meta``): ``load_from`` of an mmpretrain
``ImageClassifier`` with ``backbone=dict(type='ConvMLP')`` and ``head=dict(type='MLPClsHead')``,
and a valid backbone ``init_cfg`` checkpoint (its ``backbone.*`` keys are used). Backbones
load the published file directly too; this tool is for the classifier and for tools/test.py.
"""
import argparse

import torch

import convmlp_mm  # noqa: F401  (registers the models)
from convmlp_mm import mmpretrain_to_published, published_to_mmpretrain
from convmlp_mm.engine import load_checkpoint
from convmlp_mm.models.weights import CheckpointError
from convmlp_mm.models.weights import unwrap_state_dict

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('src', help='input checkpoint (path or URL)')
parser.add_argument('dst', help='output file')
parser.add_argument('--to', choices=['mmpretrain', 'published'], default='mmpretrain')


def main() -> None:
    args = parser.parse_args()
    try:
        state = unwrap_state_dict(load_checkpoint(args.src, map_location='cpu'), args.src)
    except CheckpointError as error:
        parser.exit(1, f'error: {error}\n')
    if args.to == 'mmpretrain':
        torch.save(dict(state_dict=published_to_mmpretrain(state), meta=dict(converted_from=args.src)), args.dst)
    else:
        torch.save(mmpretrain_to_published(state), args.dst)
    print(f'{args.src} -> {args.dst} ({args.to} layout)')


if __name__ == '__main__':
    main()
