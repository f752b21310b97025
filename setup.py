"""Packaging for convmlp_mm. Exact versions of the stack are pinned in constraints.txt."""
from setuptools import find_packages, setup

MMCV = 'mmcv>=2.0.0,<2.2.0'  # mmdet 3.3 / mmseg 1.2 refuse mmcv 2.2
EXTRAS = {
    'det': [MMCV, 'mmdet>=3.3.0,<3.4', 'pycocotools'],
    'seg': [MMCV, 'mmsegmentation>=1.2.2,<1.3', 'ftfy', 'regex'],
    'cls': [MMCV, 'mmpretrain>=1.2.0,<1.3'],
    'timm': ['timm>=1.0,<1.1', 'torchvision'],
    'tests': ['pytest'],
}
EXTRAS['all'] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name='convmlp_mm',
    version='0.1.0',
    description='ConvMLP and Pure-MLP backbones for OpenMMLab 2.0 (mmdet, mmseg, mmpretrain) and timm',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['convmlp_mm', 'convmlp_mm.*']),
    install_requires=['torch>=2.0', 'mmengine>=0.10.4,<0.11', 'numpy', 'setuptools>=77,<82'],
    extras_require=EXTRAS,
)
