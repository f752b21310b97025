"""Installing the plugin into an existing environment changes none of its packages."""
import json
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_pip_install_adds_convmlp_mm_alone():
    """`pip install .` into this suite's environment (either end of the supported range) would
    install convmlp_mm and nothing else: no upgrade or downgrade of torch, numpy, setuptools, ..."""
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-build-isolation', '--quiet',
                           '--disable-pip-version-check', '--report', '-', ROOT],
                          capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(proc.stdout)
    assert [item['metadata']['name'] for item in report['install']] == ['convmlp_mm']


def test_requirements_have_no_upper_bound_on_torch_or_numpy():
    from importlib.metadata import requires
    reqs = {r.split(';')[0].split('>')[0].split('<')[0].split('=')[0].strip(): r for r in requires('convmlp_mm')
            if 'extra ==' not in r}
    assert reqs['torch'].replace(' ', '') in ('torch>=2.1', 'torch(>=2.1)')
    assert reqs['numpy'].strip() == 'numpy'
