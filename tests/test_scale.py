"""Jobs at the scale users run them: two "nodes" of tools/dist_train.sh with a cache each, loading
a URL checkpoint from a loopback HTTP server; a download that fails names the rank and URL."""
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
