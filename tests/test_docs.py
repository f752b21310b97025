"""The documentation: a short README that links every page of docs/, the license, model-zoo tables
that are the metafiles, a tools page that names every tool, and every code block run or checked."""
import ast
import builtins
import functools
import glob
import importlib
import os.path as osp
import re
import shlex
import subprocess
import sys
from typing import NamedTuple, Optional

import pytest
import torch

import tool_runner

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAGES = ('install', 'get_started', 'model_zoo', 'usage', 'train_test', 'checkpoints', 'deployment', 'tools',
         'comparison', 'benchmarks', 'development', 'changelog')


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
# Every fenced block of README.md and docs/*.md is run or checked here. A comment line
# `<!-- doc-test: WHAT -->` right above a block says how:
#   run                   a python block: executed as written, in a namespace of its own (the published
#                         ImageNet files in torch's hub cache, in the published layout with random
#                         weights, as no download is possible here)
#   run with MODULE       the same where MODULE can be imported, skipped with the reason where not
#   config [BASE]         a python config (or a fragment merged onto BASE, `host::path` or a path of
#                         this repository): read by mmengine, its model built (one of ours where the
#                         block names ConvMLP) and its optim_wrapper built for that model
#   needs data|needs a GPU|needs a checkpoint: PLACEHOLDER, ...
#                         a python block that cannot run here: compiled, its imports run, and every
#                         name it reads is imported or assigned in it or is one of its placeholders
#                         (each of which it contains); the paragraph right above the comment, which
#                         the reader sees, says what it needs and names each placeholder in backticks
#   needs data|needs a GPU|install|long
#                         a bash block: not run (its commands train, download or install); its
#                         commands are checked (every tool exists and its --help prints its usage,
#                         every repository path exists, every make target and mim config is ours)
# A python or bash block without one fails (test_every_code_block_is_run_or_marked); plain fences
# (no language, `text`, `bibtex`) are text to read.
SHELLS = ('bash', 'sh', 'console')
TEXT = ('', 'text', 'bibtex')
CHECKED = ('needs data', 'needs a GPU', 'install', 'long')
NEEDS = ('needs data', 'needs a GPU', 'needs a checkpoint')
FENCE = re.compile(r'^(\s*)(`{3,}|~{3,})\s*([^`\s]*)')
MARKER = re.compile(r'^\s*<!-- doc-test: (.*?) -->\s*$')
RUN_WITH = re.compile(r'run with ([A-Za-z_][\w.]*)')


class Block(NamedTuple):
    page: str
    line: int        # of the opening fence
    language: str
    marker: str      # what the `<!-- doc-test: ... -->` line right above the fence says, or ''
    code: str
    note: str        # the paragraph right above that line


def doc_pages():
    return ['README.md', *sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'docs', '*.md')))]


def fenced_blocks(page: str):
    """Every fenced block of PAGE, indented ones (in lists) included."""
    lines = read(page).split('\n')
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, chars, language = fence.groups()
        end = i + 1  # the closing fence: the same character, at least as many, nothing else
        while end < len(lines) and not (lines[end].strip().startswith(chars) and not lines[end].strip(' ' + chars[0])):
            end += 1
        code = '\n'.join(line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:end])
        marker = MARKER.match(lines[i - 1]) if i else None
        note, above = [], i - 2  # the paragraph above the marker (blank lines between them skipped)
        while marker and above >= 0 and not lines[above].strip():
            above -= 1
        while marker and above >= 0 and lines[above].strip() and not FENCE.match(lines[above]):
            note.insert(0, lines[above].strip())
            above -= 1
        yield Block(page, i + 1, language, marker.group(1) if marker else '', code + '\n', ' '.join(note))
        i = end + 1


def needs(marker: str):
    """``(need, placeholders)`` of a `needs ...: A, B` marker, or None."""
    need, _, placeholders = marker.partition(':')
    if need.strip() not in NEEDS:
        return None
    return need.strip(), [p.strip() for p in placeholders.split(',') if p.strip()]


def free_names(code: str) -> set:
    """The names a block reads that it neither imports nor assigns (nor are builtins)."""
    tree = ast.parse(code)
    read_, bound = set(), set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read_ if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split('.')[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return read_ - bound


def block_problem(block: Block) -> Optional[str]:
    """Why BLOCK is neither run nor properly marked, or None."""
    where = f'{block.page}:{block.line}'
    if block.language in TEXT:
        return None
    if block.language in SHELLS:
        if block.marker not in CHECKED:
            return f'{where}: a {block.language} block needs `<!-- doc-test: {"|".join(CHECKED)} -->` right above it'
        return None
    if block.language != 'python':
        return f'{where}: no doc test for {block.language!r} blocks (write python, bash or a plain fence)'
    if block.marker == 'run' or block.marker.split(' ')[0] == 'config' or RUN_WITH.fullmatch(block.marker):
        return None
    need = needs(block.marker)
    if need is None:
        return (f'{where}: a python block needs `<!-- doc-test: run -->`, `<!-- doc-test: config [BASE] -->` or '
                f'`<!-- doc-test: {"|".join(NEEDS)}: PLACEHOLDER, ... -->` right above it (found {block.marker!r})')
    need, placeholders = need
    if not placeholders and need != 'needs a GPU':
        return f'{where}: `{need}` names no placeholder (`<!-- doc-test: {need}: PLACEHOLDER, ... -->`)'
    if need.lower() not in block.note.lower():
        return f'{where}: the paragraph right above the marker does not tell the reader that it {need}'
    unnamed = [p for p in placeholders if f'`{p}`' not in block.note]
    absent = [p for p in placeholders if p not in block.code]
    if unnamed or absent:
        return f'{where}: placeholders not named in the note above {unnamed}, not in the block {absent}'
    undefined = sorted(free_names(block.code) - set(placeholders))
    if undefined:
        return f'{where}: reads {undefined}, neither imported nor assigned in the block nor named placeholders'
    return None


def test_every_code_block_is_run_or_marked():
    """No python or bash block of the docs escapes the test below: each is run, or marked as what
    it needs with its placeholders named for the reader."""
    problems = [block_problem(block) for page in doc_pages() for block in fenced_blocks(page)]
    assert not any(problems), '\n'.join(p for p in problems if p)


def test_block_checks_find_what_they_should():
    """An unmarked block, a missing import and an unnamed placeholder are each found."""
    unmarked = Block('x.md', 1, 'python', '', 'x = 1\n', '')
    assert 'needs `<!-- doc-test: run -->`' in block_problem(unmarked)
    code = "detector = init_detector(CONFIG, 'epoch_8.pth')\n"
    note = 'Needs a checkpoint: `CONFIG` is its config, `epoch_8.pth` the file.'
    marked = Block('x.md', 1, 'python', 'needs a checkpoint: CONFIG, epoch_8.pth', code, note)
    assert "['init_detector']" in block_problem(marked)
    assert block_problem(marked._replace(code='from mmdet.apis import init_detector\n' + code)) is None
    assert 'not named in the note' in block_problem(marked._replace(
        code='from mmdet.apis import init_detector\n' + code, note='Needs a checkpoint: `CONFIG`.'))
    assert 'does not tell the reader' in block_problem(marked._replace(note='`CONFIG`, `epoch_8.pth`'))
    assert 'no doc test' in block_problem(Block('x.md', 1, 'py', 'run', 'x = 1\n', ''))
    blocks = list(fenced_blocks('docs/usage.md'))
    assert blocks and all(b.code.strip() and b.language for b in blocks)


def code_blocks():
    for page in doc_pages():
        for block in fenced_blocks(page):
            if block.language == 'python' or block.language in SHELLS:
                run_with = RUN_WITH.fullmatch(block.marker)
                clients = run_with and run_with.group(1).split('.')[0] in CLIENTS
                yield pytest.param(block, id=f'{block.page}:{block.line}',
                                   marks=[pytest.mark.clients] if clients else [])


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


#: modules of the clients extra: blocks run with them are the `clients` tier (tests/conftest.py)
CLIENTS = ('transformers', 'scipy')


@pytest.mark.slow  # runs the tools' --help and builds models
@pytest.mark.stack_independent('the documentation is the same on both stacks; what its code runs is tested on both')
@pytest.mark.parametrize('block', list(code_blocks()))
def test_code_blocks_run_or_are_checked(block, torch_home, tmp_path, monkeypatch):
    problem = block_problem(block)
    assert problem is None, problem
    page, code, marker = block.page, block.code, block.marker
    if block.language in SHELLS:
        for line in code.replace('\\\n', ' ').splitlines():
            check_command(line.strip())
        return
    text = code.replace('/path/to/convmlp_mm', ROOT)
    compiled = compile(text, page, 'exec')
    if needs(marker):
        # what can run without the data: its imports
        imports = [node for node in ast.walk(ast.parse(text)) if isinstance(node, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(body=imports, type_ignores=[]), page, 'exec'), {'__name__': '__doc_block__'})
        return
    if marker.split(' ')[0] == 'config':
        build_config_block(text, marker[len('config '):].strip(), 'ConvMLP' in code)
        return
    if RUN_WITH.fullmatch(marker):
        module = RUN_WITH.fullmatch(marker).group(1)
        pytest.importorskip(module, reason=f'{page}:{block.line} runs with {module}, which is not installed')
    else:
        assert marker == 'run', marker
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    monkeypatch.chdir(tmp_path)
    exec(compiled, {'__name__': '__doc_block__'})


def build_config_block(text: str, base: str, ours: bool) -> None:
    """A config block read by mmengine (merged onto BASE), its model and optim_wrapper built."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    if base and '::' not in base:
        base = osp.join(ROOT, base)
        assert osp.isfile(base), base
    cfg = Config.fromstring(f'_base_ = {base!r}\n' + text if base else text, '.py')
    if 'model' not in cfg:
        return
    scope = cfg.default_scope
    registry = importlib.import_module(f'{scope}.registry').MODELS
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg.model)
        if ours:
            assert type(model.backbone).__name__ in ('ConvMLP', 'PureMLP')
        if 'optim_wrapper' in cfg:
            build_optim_wrapper(model, cfg.optim_wrapper)


MODULE_PATH = re.compile(r'(?<![\w/])convmlp_mm(?:\.[A-Za-z_]\w*)+(?![\w-])')


def test_module_paths_named_in_docs_and_tools_exist():
    """Every `convmlp_mm.a.b` that README, docs/ and tools/ name is a module of ours, or a name
    in one (a function, class or constant). The changelog names what was, moved names included."""
    tools = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'tools', '**', '*.py'), recursive=True))
    sources = [page for page in doc_pages() if page != 'docs/changelog.md'] + tools
    missing = []
    for path in sources:
        for name in sorted(set(MODULE_PATH.findall(read(path)))):
            parts = name.split('.')
            depth = max(i for i in range(1, len(parts) + 1)
                        if osp.isfile(osp.join(ROOT, *parts[:i]) + '.py')
                        or osp.isfile(osp.join(ROOT, *parts[:i], '__init__.py')))
            obj = importlib.import_module('.'.join(parts[:depth]))
            for attribute in parts[depth:]:
                obj = getattr(obj, attribute, None)
            if obj is None:
                missing.append(f'{path}: {name}')
    assert not missing, '\n'.join(missing)


def test_tools_page_names_every_tool_and_make_target():
    page = read('docs/tools.md')
    tools = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'tools', '**', '*'), recursive=True)
                   if p.endswith(('.py', '.sh')))
    targets = re.search(r'^\.PHONY: (.*)$', read('Makefile'), re.M).group(1).split()
    missing = [t for t in tools if f'`{t}`' not in page] + [f'make {t}' for t in targets if f'`make {t}`' not in page]
    assert not missing, f'docs/tools.md does not name {missing}'
