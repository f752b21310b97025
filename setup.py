"""Packaging for convmlp_mm.

The requirements are the supported range (docs/install.md, "Supported versions"), wide enough that
``pip install .`` into an existing OpenMMLab environment adds convmlp_mm and changes none of its
packages. The exact stacks of our own environments are constraints.txt (newest) and
constraints-oldest.txt (oldest).
"""
import re

from setuptools import find_packages, setup

MMCV = 'mmcv>=2.0.0,<2.2.0'  # mmdet 3.3 / mmseg 1.2 refuse mmcv 2.2
MMENGINE = 'mmengine>=0.10.4,<0.11'
EXTRAS = {
    'mm': [MMENGINE],  # BaseModule backbones, registration into the hosts, the runtime parts
    'det': [MMENGINE, MMCV, 'mmdet>=3.3.0,<3.4', 'pycocotools'],
    'seg': [MMENGINE, MMCV, 'mmsegmentation>=1.2.2,<1.3', 'ftfy', 'regex'],
    'cls': [MMENGINE, MMCV, 'mmpretrain>=1.2.0,<1.3'],
    'timm': ['timm>=1.0,<1.1', 'torchvision'],
    # export_onnx.py --check, quantize_int8.py, tools/test.py with an .onnx graph, the benchmark's ONNX rows;
    # onnxscript: torch.onnx's dynamo exporter (torch 2.9 and later) writes through it
    'deploy': ['onnx', 'onnxruntime>=1.16', 'onnxscript'],
    'tests': ['pytest', 'pytest-xdist', 'coverage>=7.10', 'openmim>=0.3.9', 'ruff'],  # coverage: `patch = subprocess`
    # Hugging Face's DETR, Conditional DETR and Deformable DETR on a ConvMLP backbone (docs/usage.md, "Other
    # detection libraries"; tests/test_clients.py); scipy: their Hungarian matcher. transformers 5 needs torch >= 2.6.
    'clients': ['transformers>=5', 'scipy'],
}
# 'all' leaves out 'clients': mmpretrain 1.2.0 (in 'cls') cannot be imported beside transformers 4.57.6 or 5.25.0 (its
# multimodal models import names that transformers removed, and it imports them whenever transformers is installed).
EXTRAS['all'] = sorted({req for name, reqs in EXTRAS.items() if name != 'clients' for req in reqs})

setup(
    name='convmlp_mm',
    version=re.search(r"__version__ = '([^']+)'", open('convmlp_mm/__init__.py').read()).group(1),
    description='ConvMLP and Pure-MLP backbones for OpenMMLab 2.0 (mmdet, mmseg, mmpretrain) and timm',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',  # tested on 3.11
    packages=find_packages(include=['convmlp_mm', 'convmlp_mm.*']),
    # mim looks for the model zoo, configs and tools in the package's .mim folder; in the
    # repository it holds links to model-index.yml, configs/ and tools/, and a wheel carries copies.
    package_data={'convmlp_mm': ['.mim/model-index.yml', '.mim/configs/*/*.py', '.mim/configs/*/*.yml',
                                 '.mim/tools/*.py', '.mim/tools/*.sh', '.mim/tools/*/*.py']},
    # The models need torch only; the OpenMMLab side is in the extras. Lower bounds only where we
    # need them: an upper bound or a newer minimum would make pip upgrade or downgrade a working
    # environment. Tested: torch 2.1.2 and 2.14.1.
    install_requires=['torch>=2.1'],
    extras_require=EXTRAS,
)
