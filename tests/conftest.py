"""Suite-wide set-up: the published reference model (tools/published_convmlp.py) is imported by
name, and the tiers of the suite.

- ``slow``: a test that starts tools, trainings or other processes. ``make test-quick`` runs the
  rest (``-m "not slow"``): the model layer, configs, converters, compat.
- ``xdist_group(name)``: tests that share an expensive module fixture (a Slurm cluster, an
  installed copy of the package) run in one pytest-xdist worker (``make test`` runs two).
- ``stack_independent(reason)``: a test whose behaviour does not depend on the stack's versions
  (the OpenMMLab versions are the same on both; only torch and numpy differ). ``--oldest-stack``
  (``make test-oldest``) leaves these to the newest stack and lists them with their reasons.
- ``clients``: needs the clients extra (Hugging Face transformers), which mmpretrain 1.2.0 cannot
  be imported beside: skipped with the reason in .venv, run by ``make test-clients`` in
  .venv-clients (.venv without mmpretrain, tools/setup_env.sh).
"""
import os
import os.path as osp
import sys

import pytest

import tool_runner

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools'))


def pytest_addoption(parser):
    parser.addoption('--oldest-stack', action='store_true',
                     help='leave the stack_independent tests to the newest stack (make test-oldest)')


def pytest_configure(config):
    if os.environ.get('PYTEST_XDIST_WORKER'):
        # one of make test's two workers on as many cores: one thread each, for torch here and in
        # the tools it starts (two workers of two OpenMP threads each spin against each other and
        # ran compute-bound tests up to 5x slower)
        os.environ['OMP_NUM_THREADS'] = '1'
        import torch
        torch.set_num_threads(1)
    config.addinivalue_line('markers', 'slow: starts tools, trainings or other processes (not in make test-quick)')
    config.addinivalue_line('markers', 'xdist_group(name): run in the same pytest-xdist worker as its group')
    config.addinivalue_line('markers', 'stack_independent(reason): run on the newest stack only, for the reason given')
    config.addinivalue_line('markers', 'clients: needs the clients extra (transformers): make test-clients runs it')
    config.left_to_newest = []


def pytest_collection_modifyitems(config, items):
    # xdist hands out tests in this order: the groups (the Slurm one is the longest unit) and the
    # slow tests first, so that they start early and the short ones fill the gaps at the end
    items.sort(key=lambda item: (item.get_closest_marker('xdist_group') is None,
                                 item.get_closest_marker('slow') is None))
    if not config.getoption('--oldest-stack'):
        return
    kept = []
    for item in items:
        marker = item.get_closest_marker('stack_independent')
        if marker is None:
            kept.append(item)
        else:
            config.left_to_newest.append((item.nodeid, marker.args[0] if marker.args else 'no reason given'))
    if config.left_to_newest:
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    group = item.get_closest_marker('xdist_group')
    if group and getattr(item.config.option, 'loadgroup', False) and not item.nodeid.endswith('@' + group.args[0]):
        pytest.fail(f'pytest-xdist did not put this test in its xdist_group {group.args[0]!r}, so the group\'s '
                    f'fixtures would be built once per worker: pytest {pytest.__version__} keeps node ids where '
                    'pytest-xdist cannot add the group (xdist issue #1386); use the versions of constraints.txt',
                    pytrace=False)


def pytest_collection_finish(session):
    if any(item.get_closest_marker('slow') for item in session.items):
        tool_runner.start()  # the zygote imports the stack while the first tests run


def pytest_sessionfinish(session, exitstatus):
    tool_runner.close()
    if hasattr(session.config, 'workeroutput'):  # an xdist worker: the controller prints the list
        session.config.workeroutput['left_to_newest'] = session.config.left_to_newest


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):  # xdist's controller: every worker deselected the same tests
    left = node.config.left_to_newest
    left += [tuple(entry) for entry in getattr(node, 'workeroutput', {}).get('left_to_newest', [])
             if tuple(entry) not in left]


def pytest_terminal_summary(terminalreporter, config):
    if config.left_to_newest:
        terminalreporter.section(f'left to the newest stack: {len(config.left_to_newest)} tests')
        for nodeid, reason in config.left_to_newest:
            terminalreporter.line(f'{nodeid}: {reason}')
