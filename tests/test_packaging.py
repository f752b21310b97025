"""Installing the plugin into an existing environment changes none of its packages."""
import json
import os.path as osp
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # pip resolves the install

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_pip_install_adds_convmlp_mm_alone():
    """`pip install .` into this suite's environment (either end of the supported range) would
    install convmlp_mm and nothing else: no upgrade or downgrade of torch, numpy, setuptools, ..."""
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-build-isolation', '--quiet',
                           '--disable-pip-version-check', '--report', '-', ROOT],
                          capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(proc.stdout)
    assert [item['metadata']['name'] for item in report['install']] == ['convmlp_mm']


def test_install_requires_is_torch_alone_and_the_mm_stack_is_in_the_extras():
    """The models need torch only: no upper bound on it, and OpenMMLab comes with the extras."""
    from importlib.metadata import requires
    reqs = [r for r in requires('convmlp_mm') if 'extra ==' not in r]
    assert [r.replace(' ', '') for r in reqs] in (['torch>=2.1'], ['torch(>=2.1)'])
    for extra in ('mm', 'det', 'seg', 'cls'):
        assert any(r.startswith('mmengine') and f'extra == "{extra}"' in r for r in requires('convmlp_mm'))
