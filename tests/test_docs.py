"""The documentation: a short README that links every page of docs/, the license, model-zoo tables
that are the metafiles, a tools page that names every tool, and every code block run or checked."""
import functools
import glob
import importlib
import os.path as osp
import re
import shlex
import subprocess
import sys

import pytest
import torch

import tool_runner

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


# ------------------------------------------------------------------------ the pages' code blocks
# Every python and bash block of README.md and docs/ is run or checked here. A comment line
# `<!-- doc-test: WHAT -->` right above a block says how:
#   (none)                a python block: executed (convmlp_mm, ConvMLP, PureMLP, timm and torch
#                         imported; the published ImageNet files in torch's hub cache, in the
#                         published layout with random weights, as no download is possible here)
#   config [BASE]         a python config (or a fragment merged onto BASE): read by mmengine and its
#                         model built (one of ours where the block names ConvMLP)
#   needs data|needs a GPU|install|long
#                         not run: a python block is compiled, a bash block's commands are checked
#                         (every tool exists and its --help prints its usage, every repository path
#                         exists, every make target and mim config is ours)
# A bash block always carries one of the last four: its commands train, download or install.
BLOCK = re.compile(r'(?:<!-- doc-test: ([^>]*?) -->\n)?```(python|bash|sh|console)\n(.*?)```', re.S)
CHECKED = ('needs data', 'needs a GPU', 'install', 'long')


def code_blocks():
    for page in ('README.md', *(f'docs/{name}.md' for name in PAGES)):
        text = read(page)
        for match in BLOCK.finditer(text):
            line = text.count('\n', 0, match.start(2)) + 1
            yield pytest.param(page, match.group(2), match.group(1) or '', match.group(3), id=f'{page}:{line}')


@pytest.fixture(scope='module')
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds the published ImageNet files (published layout, random
    weights), which the pages' timm lines load."""
    from published_convmlp import randomised
    home = tmp_path_factory.mktemp('torch_home')
    (home / 'hub' / 'checkpoints').mkdir(parents=True)
    for arch in 'sml':
        torch.save(randomised(arch).state_dict(), home / 'hub' / 'checkpoints' / f'convmlp_{arch}_imagenet.pth')
    return home


@functools.lru_cache(maxsize=None)
def tool_help(tool: str) -> subprocess.CompletedProcess:
    """``TOOL --help``, run once per tool however many pages name it."""
    command = [sys.executable, osp.join(ROOT, tool)] if tool.endswith('.py') else [osp.join(ROOT, tool)]
    command.append('--help')
    return tool_runner.run(command, ROOT, timeout=300)


def check_command(line: str) -> None:
    """A shell command of the docs: its tool exists and prints its usage; its paths exist."""
    words = [w for w in shlex.split(line, comments=True) if '=' not in w or w.startswith('-')]
    if not words or words[0] in ('pip', 'tar', 'sed', 'cd', 'git', 'srun', 'sbatch'):
        return
    if words[0] == 'make':
        targets = re.findall(r'^([\w-]+):', read('Makefile'), re.M)
        assert set(words[1:]) <= set(targets), f'{line}: not a make target of ours ({", ".join(targets)})'
        return
    if words[:3] == ['python', '-m', 'mim']:
        words = words[2:]
    if words[0] == 'mim':
        if words[1] in ('train', 'test'):
            assert glob.glob(osp.join(ROOT, 'configs', '*', words[3])), f'{line}: no config {words[3]}'
        return
    tool = words[1] if words[0] == 'python' else words[0]
    assert tool.startswith('tools/') and osp.isfile(osp.join(ROOT, tool)), f'{line}: {tool} is not a tool of ours'
    result = tool_help(tool)
    assert result.returncode == 0 and result.stdout.strip(), f'{tool} --help: {result.stderr[-2000:]}'
    synopsis = osp.basename(tool)
    assert 'usage:' in result.stdout or synopsis in result.stdout.splitlines()[0], result.stdout[:500]
    for word in words[1:]:
        if word.startswith(('configs/', 'tools/')):
            assert osp.exists(osp.join(ROOT, word)), f'{line}: {word} does not exist'


@pytest.mark.slow  # runs the tools' --help and builds models
@pytest.mark.stack_independent('the documentation is the same on both stacks; what its code runs is tested on both')
@pytest.mark.parametrize('page, language, marker, code', list(code_blocks()))
def test_code_blocks_run_or_are_checked(page, language, marker, code, torch_home, tmp_path, monkeypatch):
    if language == 'bash':
        assert marker in CHECKED, f'{page}: a bash block needs `<!-- doc-test: {"|".join(CHECKED)} -->` above it'
        for line in code.replace('\\\n', ' ').splitlines():
            check_command(line.strip())
        return
    assert language == 'python', f'{page}: no doc test for {language} blocks'
    text = code.replace('/path/to/convmlp_mm', ROOT)
    compiled = compile(text, page, 'exec')
    if marker in CHECKED:
        return
    if marker.split(' ')[0] == 'config':
        from mmengine.config import Config
        from mmengine.registry import DefaultScope
        base = marker[len('config '):]
        cfg = Config.fromstring(f'_base_ = {base!r}\n' + text if base else text, '.py')
        scope = cfg.default_scope
        registry = importlib.import_module(f'{scope}.registry').MODELS
        importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
        with DefaultScope.overwrite_default_scope(scope):
            model = registry.build(cfg.model)
        if 'ConvMLP' in code:
            assert type(model.backbone).__name__ in ('ConvMLP', 'PureMLP')
        return
    assert not marker, f'{page}: unknown doc-test marker {marker!r}'
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    import convmlp_mm
    namespace = dict(convmlp_mm=convmlp_mm, ConvMLP=convmlp_mm.ConvMLP, PureMLP=convmlp_mm.PureMLP,
                     timm=importlib.import_module('timm'), torch=torch)
    monkeypatch.chdir(tmp_path)
    exec(compiled, namespace)


def test_tools_page_names_every_tool_and_make_target():
    page = read('docs/tools.md')
    tools = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'tools', '**', '*'), recursive=True)
                   if p.endswith(('.py', '.sh')))
    targets = re.search(r'^\.PHONY: (.*)$', read('Makefile'), re.M).group(1).split()
    missing = [t for t in tools if f'`{t}`' not in page] + [f'make {t}' for t in targets if f'`make {t}`' not in page]
    assert not missing, f'docs/tools.md does not name {missing}'
