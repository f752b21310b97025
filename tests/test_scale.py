"""Jobs at the scale users run them: two "nodes" of tools/dist_train.sh with a cache each, loading
a URL checkpoint from a loopback HTTP server; a download that fails names the rank and URL."""
import glob
import http.server
import os
import os.path as osp
import subprocess
import sys
import threading
from functools import partial

import pytest
import torch

from convmlp_mm.data import generate
from convmlp_mm.engine.checkpoint import download
from published_convmlp import randomised

import tool_runner

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SEG = osp.join(ROOT, 'configs/quickstart/fpn_convmlp-s_shapes.py')
SHORT = ['train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'train_dataloader.batch_size=1',
         'default_hooks.checkpoint.interval=2',
         *[f'{s}_dataloader.{k}' for s in ('train', 'val', 'test')
           for k in ('num_workers=0', 'persistent_workers=False')]]


@pytest.fixture
def server(tmp_path):
    """(base URL, the paths fetched): a loopback HTTP server over ``tmp_path / 'served'``."""
    fetched = []

    class Logged(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            fetched.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    (tmp_path / 'served').mkdir()
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), partial(Logged, directory=str(tmp_path / 'served')))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}', fetched
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow  # two launchers of two processes each
def test_two_nodes_with_their_own_caches_load_a_url_once_per_node(tmp_path, server):
    url, fetched = server
    torch.save(randomised('s').state_dict(), tmp_path / 'served' / 'convmlp_s_imagenet.pth')
    generate(str(tmp_path / 'data/shapes'), num_train=4, num_val=2, size=(64, 80), seed=1)
    port = tool_runner.free_port()
    config = tmp_path / 'pretrained.py'
    config.write_text(f'_base_ = {SEG!r}\nmodel = dict(backbone=dict(init_cfg=dict(_delete_=True, type="Pretrained", '
                      f'checkpoint="{url}/convmlp_s_imagenet.pth")))\n')
    nodes = []
    for node in (0, 1):
        env = dict(os.environ, NNODES='2', NODE_RANK=str(node), MASTER_ADDR='127.0.0.1', PORT=str(port),
                   TORCH_HOME=str(tmp_path / f'node{node}'), VIRTUAL_ENV=sys.prefix, PYTHONUNBUFFERED='1')
        nodes.append(subprocess.Popen(['bash', osp.join(ROOT, 'tools/dist_train.sh'), str(config), '2', '--work-dir',
                                       str(tmp_path / 'work'), '--cfg-options', *SHORT],
                                      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = [proc.communicate(timeout=600)[0] for proc in nodes]
    for proc, out in zip(nodes, outs):
        assert proc.returncode == 0, out[-4000:]
    assert fetched == ['/convmlp_s_imagenet.pth'] * 2  # one download per node, not per rank
    for node in (0, 1):
        assert osp.isfile(tmp_path / f'node{node}/hub/checkpoints/convmlp_s_imagenet.pth')
    assert osp.isfile(tmp_path / 'work/iter_2.pth')


def test_a_failed_download_names_the_rank_and_the_url(tmp_path, server):
    url, _ = server
    with pytest.raises(OSError, match=rf'rank 0 \(local rank 0\) could not download {url}/missing.pth into '
                                      rf'{tmp_path}/cache: HTTPError: HTTP Error 404'):
        download(f'{url}/missing.pth', str(tmp_path / 'cache'))


# ------------------------------------------------------------------------------------ 8 ranks
CLS = osp.join(ROOT, 'configs/quickstart/convmlp-s_shapes-cls.py')
# Records, on every rank, the images of each training iteration; on rank 3 it sends its own
# process SIGTERM after iteration index `signal_after` (the ranks agree on it at the next one).
SEEN_HOOK = '''
import os
import signal

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SeenSamplesHook(Hook):
    def __init__(self, out, signal_after=None):
        self.out, self.signal_after = out, signal_after

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        paths = ' '.join(os.path.basename(s.img_path) for s in data_batch['data_samples'])
        with open(os.path.join(self.out, f'rank{get_rank()}.txt'), 'a') as f:
            f.write(f'{runner.epoch} {runner.iter} {paths}\\n')
        if get_rank() == 3 and runner.iter == self.signal_after:
            os.kill(os.getpid(), signal.SIGTERM)
'''
RANKS_OPTIONS = ['train_cfg.max_epochs=3', 'train_cfg.val_interval=100', 'train_dataloader.batch_size=1',
                 'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=1',
                 'default_hooks.checkpoint.max_keep_ckpts=-1', 'randomness.seed=3', 'randomness.deterministic=True',
                 'model.backbone.drop_path_rate=0.1',
                 *[f'{s}_dataloader.{k}' for s in ('train', 'val', 'test')
                   for k in ('num_workers=0', 'persistent_workers=False')]]


def launch(cwd, work, nproc, *options, resume=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
    env.update(PYTHONUNBUFFERED='1', VIRTUAL_ENV=sys.prefix, PORT=str(tool_runner.free_port()), PYTHONPATH=str(cwd))
    command = ['bash', osp.join(ROOT, 'tools/dist_train.sh'), str(cwd / 'seen.py'), str(nproc), '--work-dir',
               str(work), '--auto-scale-lr', '--cfg-options', *RANKS_OPTIONS, *options]
    proc = subprocess.run(command + (['--resume', str(resume)] if resume else []), cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    return proc.returncode, proc.stdout


def seen(folder, ranks):
    """{rank: [(epoch, iteration, images)]} of a run's SeenSamplesHook."""
    lines = {rank: [line.split() for line in open(folder / f'rank{rank}.txt')] for rank in range(ranks)}
    return {rank: [(int(e), int(i), paths) for e, i, *paths in split] for rank, split in lines.items()}


def per_epoch(*records):
    """{epoch: sorted images trained in it, over all ranks and runs}."""
    epochs = {}
    for record in records:
        for lines in record.values():
            for epoch, _, paths in lines:
                epochs.setdefault(epoch, []).extend(paths)
    return {epoch: sorted(paths) for epoch, paths in epochs.items()}


@pytest.mark.slow  # four launches of 8 (and 4) gloo processes
@pytest.mark.stack_independent('torchrun and gloo with 8 processes; the loops and hooks are the same as in the '
                               '2-process runs that run on torch 2.1')
def test_eight_ranks_train_stop_together_and_resume_exactly(tmp_path):
    """tools/dist_train.sh CONFIG 8: 32 images at batch 1 (4 iterations an epoch); each image once
    per epoch over the ranks, one log, one checkpoint per save, lr scaled for 8 x 1. SIGTERM to rank
    3 stops all 8 after the same iteration with one checkpoint; --resume with 8 ends with the weights
    of the uninterrupted run, with 4 the interrupted epoch restarts with the warning."""
    from test_cluster import assert_same_training
    from convmlp_mm.data import generate_classification
    generate_classification(str(tmp_path / 'data/shapes_cls'), 32, 4, seed=6)
    images = sorted(line.split()[0].split('/')[-1] for line in open(tmp_path / 'data/shapes_cls/meta/train.txt'))
    (tmp_path / 'seen_samples.py').write_text(SEEN_HOOK)
    (tmp_path / 'seen.py').write_text(
        f'_base_ = {CLS!r}\ncustom_imports = dict(imports=["convmlp_mm", "seen_samples"], allow_failed_imports=False)\n'
        'custom_hooks = [dict(type="SafeCheckpointLoadHook"), dict(type="RandomStateHook"), '
        'dict(type="FiniteLossHook"), dict(type="SeenSamplesHook", out=None)]\n')
    for run in ('whole', 'parts', 'parts-8', 'parts-4'):
        (tmp_path / run).mkdir()

    code, out = launch(tmp_path, tmp_path / 'work-whole', 8, f'custom_hooks.3.out={tmp_path}/whole')
    assert code == 0, out[-4000:]
    whole = seen(tmp_path / 'whole', 8)
    assert all(len(lines) == 12 for lines in whole.values())
    assert per_epoch(whole) == {epoch: images for epoch in range(3)}
    assert len(glob.glob(str(tmp_path / 'work-whole/*/*.log'))) == 1
    assert sorted(p for p in os.listdir(tmp_path / 'work-whole') if p.endswith('.pth')) == \
        ['epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth']
    assert out.count('Saving checkpoint at 2 epochs') == 1 and out.count('Epoch(train) [2][4/4]') == 1
    assert 'the current batch size is 8' in out and 'Scaling the original LR by 0.0078125' in out
    optimizer = torch.load(tmp_path / 'work-whole/epoch_1.pth', map_location='cpu', weights_only=False)['optimizer']
    assert optimizer['param_groups'][0]['initial_lr'] == pytest.approx(1e-3 * 8 / 1024)

    code, out = launch(tmp_path, tmp_path / 'work-parts', 8, f'custom_hooks.3.out={tmp_path}/parts',
                       'custom_hooks.3.signal_after=5')
    assert code != 0 and 'SIGTERM received; saving a checkpoint after iteration 7' in out, out[-4000:]
    parts = seen(tmp_path / 'parts', 8)
    assert all([i for _, i, _ in lines] == list(range(7)) for lines in parts.values())  # all stop after index 6
    assert sorted(p for p in os.listdir(tmp_path / 'work-parts') if p.endswith('.pth')) == ['epoch_1.pth', 'iter_7.pth']
    assert open(tmp_path / 'work-parts/last_checkpoint').read().strip().endswith('iter_7.pth')

    code, out = launch(tmp_path, tmp_path / 'work-parts', 8, f'custom_hooks.3.out={tmp_path}/parts-8',
                       resume=tmp_path / 'work-parts/iter_7.pth')
    assert code == 0, out[-4000:]
    assert 'resumed in the middle of epoch 2: skipping its 3 trained batches' in out
    assert per_epoch(parts, seen(tmp_path / 'parts-8', 8)) == {epoch: images for epoch in range(3)}
    assert_same_training(tmp_path / 'work-parts/epoch_3.pth', tmp_path / 'work-whole/epoch_3.pth')

    code, out = launch(tmp_path, tmp_path / 'work-4', 4, f'custom_hooks.3.out={tmp_path}/parts-4',
                       'train_cfg.max_epochs=2',
                       resume=tmp_path / 'work-parts/iter_7.pth')
    assert code == 0, out[-4000:]
    warnings = [line for line in out.splitlines() if 'restarts from its first batch' in line]
    assert len(warnings) == 1 and 'world_size 8 -> 4' in warnings[0], out[-4000:]
    assert per_epoch(seen(tmp_path / 'parts-4', 4)) == {1: images}
