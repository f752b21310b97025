"""Generate the embedded default dataset (COCO and ADE20K layouts) into data/shapes, or with
``--classification`` the single-shape classification dataset into data/shapes_cls.

    python tools/make_shapes.py [--root data/shapes] [--train 200] [--val 50] [--seed 0] [--force]
    python tools/make_shapes.py --classification [--root data/shapes_cls] [--train 1500] [--val 300]
"""
import argparse

from convmlp_mm.data import generate, generate_classification

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--classification', action='store_true',
                    help='one shape per image, 64x64, mmpretrain CustomDataset layout')
parser.add_argument('--root', help='output directory (default data/shapes, data/shapes_cls)')
parser.add_argument('--train', type=int, help='training images (default 200, 1500)')
parser.add_argument('--val', type=int, help='validation images (default 50, 300)')
parser.add_argument('--height', type=int, help='default 128 (classification: 64)')
parser.add_argument('--width', type=int, help='default 160 (classification: 64)')
parser.add_argument('--seed', type=int, default=0)
parser.add_argument('--force', action='store_true', help='regenerate even if a complete dataset exists')

if __name__ == '__main__':
    args = parser.parse_args()
    defaults = (dict(root='data/shapes_cls', train=1500, val=300, height=64, width=64) if args.classification else
                dict(root='data/shapes', train=200, val=50, height=128, width=160))
    opts = {k: default if getattr(args, k) is None else getattr(args, k) for k, default in defaults.items()}
    make = generate_classification if args.classification else generate
    root = make(opts['root'], opts['train'], opts['val'], (opts['height'], opts['width']), seed=args.seed,
                force=args.force)
    print(f'dataset ready: {root}')
