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


def test_model_zoo_tables_are_the_metafiles(capsys):
    """README's results table and docs/model_zoo.md's tables are what tools/model_zoo.py writes
    from the metafiles; a table that differs is named."""
    import model_zoo
    assert model_zoo.main(['--check']) == 0, capsys.readouterr().err
    blocks = model_zoo.render(model_zoo.load_models())
    for page in model_zoo.PAGES:
        text = read(page)
        assert model_zoo.BLOCK.search(text), f'{page} has no model-zoo table'
        stale = text.replace('| 37.2 | 38.4 / 35.7 |', '| 37.3 | 38.4 / 35.7 |').replace('| 18.74 |', '| 18.75 |')
        assert model_zoo.update(stale, blocks) == text  # a changed number is written back
