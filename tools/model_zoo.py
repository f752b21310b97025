"""Write the model-zoo tables of docs/model_zoo.md and README.md from the mim metafiles.

    python tools/model_zoo.py            rewrite the tables in place
    python tools/model_zoo.py --check    exit 1, naming each table that differs from the metafiles

The metafiles (``model-index.yml`` and ``configs/*/metafile.yml``) are the one source of the
zoo's numbers and weights; each table sits in its page between ``<!-- model-zoo: NAME -->`` and
``<!-- /model-zoo -->``. The column "verified here" says what the suite checks on this code for
that row (the tests named in docs/model_zoo.md).
"""
import argparse
import os
import os.path as osp
import re
import sys
from typing import Dict, List

import yaml

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAGES = ('README.md', 'docs/model_zoo.md')
BLOCK = re.compile(r'(<!-- model-zoo: (\S+) -->\n)(.*?)(<!-- /model-zoo -->)', re.S)
ARCHS = {'s': 'S', 'm': 'M', 'l': 'L'}


def load_models(root: str = ROOT) -> Dict[str, dict]:
    """Every model of the zoo by name, as its metafile states it."""
    index = yaml.safe_load(open(osp.join(root, 'model-index.yml')))
    models = {}
    for path in index['Import']:
        for model in yaml.safe_load(open(osp.join(root, path)))['Models']:
            models[model['Name']] = model
    return models


def metric(model: dict, name: str) -> str:
    for result in model.get('Results', []):
        if name in result['Metrics']:
            return f"{result['Metrics'][name]}"
    return ''


def config_link(model: dict, prefix: str) -> str:
    return f"[`{osp.basename(model['Config'])}`]({prefix}{model['Config']})"


def weights_link(model: dict, label: str = 'weights') -> str:
    return f"[{label}]({model['Weights']})" if model.get('Weights') else ''


def millions(model: dict) -> str:
    return f"{model['Metadata']['Parameters'] / 1e6:.2f}"


def giga(model: dict, digits: int = 1) -> str:
    flops = model['Metadata'].get('FLOPs')
    return f'{flops / 1e9:.{digits}f}' if flops else ''


def verified(model: dict) -> str:
    """What the suite checks on this code for this row."""
    name = model['Name']
    if name.startswith('table2-'):
        return 'params and GMACs equal the paper\'s (test_ablations)'
    if '_published_' in name:
        return 'file loads strictly; logits equal the official layout (test_checkpoints)'
    if name.endswith(('_cifar10', '_cifar100', '_flowers102')):
        return 'builds; trains from a published-layout file (test_classification)'
    if name.endswith('_in1k'):
        return 'params; builds and trains (test_classification)'
    if model.get('Weights'):
        return 'params; published-layout file loads strictly through test.py and infer.py (test_published)'
    return 'params within 0.15 M of the paper (test_configs)'


def table(header: List[str], rows: List[List[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    return '\n'.join(lines + ['| ' + ' | '.join(row) + ' |' for row in rows]) + '\n'


def render(models: Dict[str, dict]) -> Dict[str, str]:
    """The text of every table, by block name."""
    docs = '../'
    blocks = {}
    blocks['results'] = table(
        ['model', 'params', 'GMACs', 'ImageNet top-1', 'RetinaNet AP', 'Mask R-CNN box / mask AP',
         'Semantic FPN mIoU', 'weights'],
        [[f'ConvMLP-{A}', f"{models[f'convmlp-{a}_published_in1k']['Metadata']['Parameters'] / 1e6:.1f} M",
          giga(models[f'convmlp-{a}_published_in1k']),
          metric(models[f'convmlp-{a}_published_in1k'], 'Top 1 Accuracy'),
          metric(models[f'retinanet_convmlp-{a}_fpn_1x_coco'], 'box AP'),
          f"{metric(models[f'mask-rcnn_convmlp-{a}_fpn_1x_coco'], 'box AP')} / "
          f"{metric(models[f'mask-rcnn_convmlp-{a}_fpn_1x_coco'], 'mask AP')}",
          metric(models[f'fpn_convmlp-{a}_8xb2-40k_ade20k-512x512'], 'mIoU'),
          ' · '.join([weights_link(models[f'convmlp-{a}_published_in1k'], 'ImageNet'),
                      weights_link(models[f'retinanet_convmlp-{a}_fpn_1x_coco'], 'RetinaNet'),
                      weights_link(models[f'mask-rcnn_convmlp-{a}_fpn_1x_coco'], 'Mask R-CNN'),
                      weights_link(models[f'fpn_convmlp-{a}_8xb2-40k_ade20k-512x512'], 'Semantic FPN')])]
         for a, A in ARCHS.items()])
    blocks['table2'] = table(
        ['row', 'config', 'params (M)', 'GMACs', 'paper top-1', 'verified here'],
        [[str(row), config_link(models[name], docs), f"{models[name]['Metadata']['Parameters'] / 1e6:.2f}",
          giga(models[name], 2), metric(models[name], 'Top 1 Accuracy'), verified(models[name])]
         for row, name in enumerate(sorted(n for n in models if n.startswith('table2-')), 1)])
    rows = []
    for a, A in ARCHS.items():
        for family, label in (('convmlp', 'ConvMLP'), ('puremlp', 'Pure-MLP')):
            train = models[f'{family}-{a}_8xb128-300e_in1k']
            published = models.get(f'{family}-{a}_published_in1k')
            rows.append([f'{label}-{A}', config_link(train, docs), millions(train), giga(train, 3),
                         config_link(published, docs) if published else '(none published)',
                         weights_link(published) if published else '', metric(train, 'Top 1 Accuracy'),
                         verified(published or train)])
    blocks['imagenet'] = table(['model', 'train config', 'params (M)', 'GMACs', 'published checkpoint, evaluated with',
                                'weights', 'paper top-1', 'verified here'], rows)
    rows = []
    for dataset, label in (('cifar10', 'CIFAR-10'), ('cifar100', 'CIFAR-100'), ('flowers102', 'Flowers-102')):
        row = [n for n in models if n.startswith('convmlp-') and n.endswith(f'-50e_{dataset}')]
        row.sort(key=lambda n: 'sml'.index(n[len('convmlp-')]))
        rows.append([label, *[f'{config_link(models[n], docs)} ({weights_link(models[n])})' for n in row],
                     ' / '.join(metric(models[n], 'Top 1 Accuracy') for n in row), verified(models[row[0]])])
    blocks['transfer'] = table(['dataset', 'ConvMLP-S', 'ConvMLP-M', 'ConvMLP-L', 'paper top-1 (S / M / L)',
                                'verified here'], rows)
    for block, prefix, metrics in (('retinanet', 'retinanet_', ['box AP']),
                                   ('mask_rcnn', 'mask-rcnn_', ['box AP', 'mask AP']),
                                   ('sem_fpn', 'fpn_', ['mIoU'])):
        blocks[block] = table(
            ['config', 'params (M)', 'paper params (M)', 'GFLOPs', 'paper ' + ' / '.join(metrics), 'weights',
             'verified here'],
            [[config_link(m, docs), millions(m), f"{m['Metadata']['Paper Parameters (M)']}", giga(m),
              ' / '.join(metric(m, k) for k in metrics), weights_link(m), verified(m)]
             for m in models.values() if m['Name'].startswith(prefix)])
    return blocks


def update(text: str, blocks: Dict[str, str]) -> str:
    """``text`` with the content of each of its model-zoo blocks replaced."""
    def fill(match):
        if match.group(2) not in blocks:
            raise KeyError(f'unknown model-zoo block {match.group(2)!r}; known: {", ".join(sorted(blocks))}')
        return match.group(1) + blocks[match.group(2)] + match.group(4)
    return BLOCK.sub(fill, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='Write (or --check) the model-zoo tables from the metafiles.')
    parser.add_argument('--check', action='store_true', help='change nothing; exit 1 if a table is out of date')
    args = parser.parse_args(argv)
    blocks = render(load_models())
    stale = []
    for page in PAGES:
        path = osp.join(ROOT, page)
        text = open(path, encoding='utf-8').read()
        new = update(text, blocks)
        if new == text:
            continue
        if args.check:
            stale += [f'{page}: {name}' for _, name, body, _ in BLOCK.findall(text) if body != blocks[name]]
        else:
            with open(path + '.part', 'w', encoding='utf-8') as f:
                f.write(new)
            os.replace(path + '.part', path)
            print(f'wrote {page}')
    if stale:
        print('out of date (run python tools/model_zoo.py): ' + ', '.join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
