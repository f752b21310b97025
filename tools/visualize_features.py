"""Draw the backbone's F1-F4 feature maps for one image (as the paper's Figure 4 does).

    python tools/visualize_features.py CONFIG [CHECKPOINT] IMAGE [--out features.png] [--channels 6]

Row i shows F(i+1): the image, the mean over channels, then the channels of largest variance.
Without a checkpoint the backbone's own initialisation (e.g. ImageNet weights from its
``init_cfg``) is used.
"""
import argparse
import os
import os.path as osp

import matplotlib
import mmcv
import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

import convmlp_mm  # noqa: F401  (registers the models and the runtime parts)
from convmlp_mm.engine import safe_checkpoint_loading
from convmlp_mm.mm import build_host_model

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument('config')
parser.add_argument('paths', nargs='+', metavar='[CHECKPOINT] IMAGE')
parser.add_argument('--out', default='outputs/features.png')
parser.add_argument('--channels', type=int, default=6, help='channels shown per feature map')


def backbone_features(cfg: Config, checkpoint, image: np.ndarray):
    """F1-F4 of ``image`` (H, W, 3 BGR uint8), normalised as the config's data preprocessor does."""
    model, _ = build_host_model(cfg, 'config')
    if checkpoint:
        with safe_checkpoint_loading():
            load_checkpoint(model, checkpoint, map_location='cpu')
    else:
        model.init_weights()
    model.eval()
    pre = cfg.model.get('data_preprocessor', {})
    if pre.get('bgr_to_rgb', False):
        image = image[..., ::-1]
    mean = torch.tensor(pre.get('mean', [0., 0., 0.])).view(3, 1, 1)
    std = torch.tensor(pre.get('std', [1., 1., 1.])).view(3, 1, 1)
    x = (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() - mean) / std  # HWC -> CHW
    with torch.no_grad():
        return model.backbone(x[None])


def draw(image: np.ndarray, feats, channels: int, out: str) -> None:
    fig, axes = plt.subplots(len(feats), channels + 2, figsize=(2 * (channels + 2), 2 * len(feats)), squeeze=False)
    for row, f in enumerate(feats):
        f = f[0]  # (C, H, W)
        order = f.flatten(1).var(dim=1).argsort(descending=True)[:channels]
        panels = [('image', image), ('channel mean', f.mean(0))] + [(f'channel {int(c)}', f[c]) for c in order]
        for col, ax in enumerate(axes[row]):
            ax.axis('off')
            if col < len(panels):
                title, panel = panels[col]
                ax.imshow(panel if col == 0 else panel.numpy(), cmap=None if col == 0 else 'viridis')
                ax.set_title(f'F{row + 1} {tuple(f.shape)}' if col == 1 else title, fontsize=8)
    fig.tight_layout()
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    args = parser.parse_args()
    if len(args.paths) > 2:
        parser.error('give at most a checkpoint and one image')
    checkpoint, image_path = (None, *args.paths)[-2:]
    for path in filter(None, (checkpoint, image_path)):
        if not osp.isfile(path):
            parser.error(f'{path}: file not found')
    image = mmcv.imread(image_path)
    if image is None:
        parser.error(f'{image_path}: not a readable image')
    feats = backbone_features(Config.fromfile(args.config), checkpoint, image)
    draw(mmcv.bgr2rgb(image), feats, args.channels, args.out)
    print(args.out)


if __name__ == '__main__':
    main()
