"""mim finds our model zoo, configs and tools: `mim search`, `mim train`, `mim test` and `mim
download` on an installed copy of the package (a wheel installed into a temporary target, as
`pip install .` would), the download against a loopback HTTP server; and `mim search` and `mim
train` on the editable install of tools/setup_env.sh, from the repository and from elsewhere."""
import functools
import http.server
import os
import os.path as osp
import shutil
import subprocess
import sys
import threading

import pytest
import torch
import yaml

from convmlp_mm.data import generate_classification

import tool_runner

pytestmark = [pytest.mark.slow,  # mim and our tools in subprocesses
              pytest.mark.xdist_group('mim')]  # one installed copy

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PUBLISHED = 'https://shi-labs.com/projects/convmlp/checkpoints/'
MIM = osp.join(osp.dirname(sys.executable), 'mim')  # the environment's mim command


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """The package built and installed (no dependencies) into a fresh target directory."""
    target = tmp_path_factory.mktemp('site')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--quiet',
                    '--disable-pip-version-check', '--target', str(target), ROOT], check=True, capture_output=True)
    assert osp.isfile(target / 'convmlp_mm' / '.mim' / 'model-index.yml')
    return target


def mim(*args, site=None, cwd=None, timeout=900, command=(sys.executable, '-m', 'mim')):
    """mim as ``python -m mim``, or as the environment's ``mim`` command with ``command=MIM``."""
    env = dict(os.environ)
    if site is not None:
        env['PYTHONPATH'] = str(site)  # the installed copy, ahead of the editable one
    result = tool_runner.run([*command, *args], cwd, env, timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def tiny_training(tmp_path) -> list:
    """--cfg-options for one epoch of the classification quickstart on 8 generated images."""
    data = generate_classification(str(tmp_path / 'shapes_cls'), 8, 4)
    return ['--cfg-options', *[f'{s}_dataloader.dataset.data_root={data}' for s in ('train', 'val', 'test')],
            'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
            *[f'{s}_dataloader.num_workers=0' for s in ('train', 'val', 'test')]]


def zoo_names():
    index = yaml.safe_load(open(osp.join(ROOT, 'model-index.yml')))
    return [m['Name'] for path in index['Import'] for m in yaml.safe_load(open(osp.join(ROOT, path)))['Models']]


def test_model_index_names_every_reproduction_config_with_the_papers_numbers():
    names = zoo_names()
    assert len(names) == len(set(names)) == 27 + 25
    for path in yaml.safe_load(open(osp.join(ROOT, 'model-index.yml')))['Import']:
        meta = yaml.safe_load(open(osp.join(ROOT, path)))
        for model in meta['Models']:
            assert osp.isfile(osp.join(ROOT, model['Config'])), model['Config']
            assert model['In Collection'] == meta['Collections'][0]['Name']
            assert 'paper' in model['Metadata']['Results Source'] or model['Name'].startswith('puremlp-')
            assert model['Metadata']['Training Data'] and model['Metadata']['Training Resources']


def test_mim_search_lists_the_zoo(installed, tmp_path):
    out = mim('search', 'convmlp_mm', site=installed, cwd=tmp_path)
    listed = {line.split(':', 1)[1].strip() for line in out.splitlines() if line.startswith('config id:')}
    assert listed == set(zoo_names())


@pytest.mark.parametrize('where', ['repository', 'elsewhere'])
@pytest.mark.parametrize('command', [[MIM], [sys.executable, '-m', 'mim']], ids=['mim', 'python -m mim'])
def test_mim_finds_the_editable_install(command, where, tmp_path):
    """tools/setup_env.sh's editable install (setuptools' develop: the repository linked)."""
    out = mim('search', 'convmlp_mm', cwd=ROOT if where == 'repository' else tmp_path, command=command)
    listed = {line.split(':', 1)[1].strip() for line in out.splitlines() if line.startswith('config id:')}
    assert listed == set(zoo_names())


def test_mim_train_runs_the_editable_install_from_another_directory(tmp_path):
    work = tmp_path / 'work'
    mim('train', 'convmlp_mm', 'convmlp-s_shapes-cls.py', '--work-dir', str(work), *tiny_training(tmp_path),
        cwd=tmp_path, command=[MIM])
    assert (work / 'epoch_1.pth').is_file()


@pytest.mark.stack_independent('mim resolves and starts our tools; what they run is tested on both stacks')
def test_mim_train_and_test_run_our_tools(installed, tmp_path):
    options = tiny_training(tmp_path)
    work = tmp_path / 'work'
    mim('train', 'convmlp_mm', 'convmlp-s_shapes-cls.py', '--work-dir', str(work), *options, site=installed,
        cwd=tmp_path)
    assert (work / 'epoch_1.pth').is_file()
    out = mim('test', 'convmlp_mm', 'convmlp-s_shapes-cls.py', '--checkpoint', str(work / 'epoch_1.pth'),
              '--work-dir', str(work), *options, site=installed, cwd=tmp_path)
    assert 'accuracy/top1' in out


# config -> the published file it downloads (the official repository's names)
DOWNLOADS = {'convmlp-s_published_in1k': 'convmlp_s_imagenet.pth',
             **{f'retinanet_convmlp-{a}_fpn_1x_coco': f'detection/retinanet_convmlp_{a}_coco.pth' for a in 'sml'},
             **{f'mask-rcnn_convmlp-{a}_fpn_1x_coco': f'detection/maskrcnn_convmlp_{a}_coco.pth' for a in 'sml'},
             **{f'fpn_convmlp-{a}_8xb2-40k_ade20k-512x512': f'segmentation/sem_fpn_convmlp_{a}_ade20k.pth'
                for a in 'sml'}}


def test_mim_download_fetches_weights_and_config(installed, tmp_path):
    """The ImageNet and the nine detection and segmentation files, from a loopback server standing
    in for shi-labs.com (the installed metafiles point there for the test's duration)."""
    served = tmp_path / 'served'
    for index, name in enumerate(DOWNLOADS.values()):
        (served / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save({'w': torch.arange(6.) + index}, served / name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    metafiles = sorted((installed / 'convmlp_mm' / '.mim' / 'configs').glob('*/metafile.yml'))
    try:
        for metafile in metafiles:
            metafile.write_text(metafile.read_text().replace(PUBLISHED, f'http://127.0.0.1:{server.server_address[1]}/'))
        dest = tmp_path / 'dest'
        mim('download', 'convmlp_mm', '--dest', str(dest), '--config', *DOWNLOADS, site=installed, cwd=tmp_path)
    finally:
        server.shutdown()
        thread.join()
        for metafile in metafiles:
            shutil.copyfile(osp.join(ROOT, 'configs', metafile.parent.name, 'metafile.yml'), metafile)
    for index, (config, name) in enumerate(DOWNLOADS.items()):
        downloaded = torch.load(dest / osp.basename(name), weights_only=True)['w']
        assert torch.equal(downloaded, torch.arange(6.) + index), name
        assert (dest / f'{config}.py').is_file()
