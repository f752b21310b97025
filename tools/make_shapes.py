"""Generate the embedded default dataset (COCO and ADE20K layouts) into data/shapes.

    python tools/make_shapes.py [--root data/shapes] [--train 200] [--val 50] [--seed 0] [--force]
"""
import argparse

from convmlp_mm.data import generate

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('--root', default='data/shapes')
parser.add_argument('--train', type=int, default=200, help='training images')
parser.add_argument('--val', type=int, default=50, help='validation images')
parser.add_argument('--height', type=int, default=128)
parser.add_argument('--width', type=int, default=160)
parser.add_argument('--seed', type=int, default=0)
parser.add_argument('--force', action='store_true', help='regenerate even if a complete dataset exists')

if __name__ == '__main__':
    args = parser.parse_args()
    root = generate(args.root, args.train, args.val, (args.height, args.width), seed=args.seed, force=args.force)
    print(f'dataset ready: {root}')
