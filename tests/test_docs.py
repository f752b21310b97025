"""The documentation's shape: a short README that links every page of docs/, and the license."""
import os.path as osp
import re

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAGES = ('install', 'get_started', 'model_zoo', 'usage', 'train_test', 'checkpoints', 'deployment', 'tools',
         'benchmarks', 'development', 'changelog')


def read(path):
    with open(osp.join(ROOT, path), encoding='utf-8') as f:
        return f.read()


def test_readme_is_short_and_links_every_page():
    readme = read('README.md')
    assert len(readme.splitlines()) <= 200
    linked = set(re.findall(r'\]\(docs/([a-z_]+)\.md', readme))
    assert set(PAGES) <= linked, sorted(set(PAGES) - linked)
    assert osp.isfile(osp.join(ROOT, 'LICENSE')) and 'Apache License' in read('LICENSE')
    assert '@article{li2021convmlp' in readme and 'SHI-Labs/Convolutional-MLPs' in readme


def test_relative_links_of_the_docs_resolve():
    for page in ('README.md', *(f'docs/{name}.md' for name in PAGES)):
        folder = osp.dirname(osp.join(ROOT, page))
        for target in re.findall(r'\]\((?!https?://|#)([^)#\s]+)', read(page)):
            assert osp.exists(osp.join(folder, target)), f'{page}: {target} does not exist'
