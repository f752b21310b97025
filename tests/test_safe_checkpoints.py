"""Checkpoints that cannot run code (convmlp_mm.engine.checkpoint): every read path refuses payloads and
names the file and the global; every checkpoint our stack writes loads without an opt-in."""
import builtins
import functools
import gc
import hashlib
import http.server
import os
import os.path as osp
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from mmengine.hooks import CheckpointHook
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner
from toy import ToyDataset, ToyModel, experiment_name
from mmengine.runner.checkpoint import CheckpointLoader

from convmlp_mm.mm import ConvMLP
from convmlp_mm.engine.checkpoint import (LOADERS, CheckpointError, CheckpointNotFoundError, checkpoint_globals,
                                          load_checkpoint, load_safely, safe_checkpoint_loading, trust_checkpoint)
from published_convmlp import randomised

import tool_runner

pytestmark = pytest.mark.slow  # runners, tools and servers

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
QUICK = osp.join(ROOT, 'configs/quickstart')


# ------------------------------------------------------------------------------ payloads
class Payload:
    """Unpickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker):
    """(name, object, global the error must name): each would create ``marker`` when unpickled."""
    import subprocess as sp
    code = f'open({str(marker)!r}, "w").close()'
    return [
        ('os.system', Payload(os.system, f'touch {marker}'), 'system'),
        ('subprocess.Popen', Payload(sp.Popen, ['touch', str(marker)]), 'subprocess.Popen'),
        ('subprocess.call', Payload(sp.call, ['touch', str(marker)]), 'subprocess.call'),
        ('builtins.eval', Payload(builtins.eval, code), 'builtins.eval'),
        ('builtins.exec', Payload(builtins.exec, code), 'builtins.exec'),
        ('getattr', Payload(getattr, HistoryBuffer, '__init__'),
         "getattr(mmengine.logging.history_buffer.HistoryBuffer, '__init__')"),
        ('object array', np.array([Payload(builtins.eval, code)], dtype=object), 'builtins.eval'),
    ]


PAYLOAD_NAMES = [name for name, _, _ in payloads('x')]


def payload(name, marker):
    (entry, ) = [(obj, refused) for n, obj, refused in payloads(marker) if n == name]
    return entry


def poisoned_backbone_checkpoint(path, payload_object):
    """A normal-looking mm checkpoint of a ConvMLP-S backbone, with the payload in ``meta``."""
    state = {f'backbone.{k}': v for k, v in randomised('s').state_dict().items()}
    torch.save(dict(state_dict=state, meta=dict(epoch=1, note=payload_object)), path)
    return str(path)


def assert_refused(error_text, filename, refused, marker):
    assert not osp.exists(marker), 'the payload ran'
    assert str(filename) in error_text and refused in error_text, error_text
    assert 'trust' in error_text  # how to opt in


@pytest.mark.parametrize('name', PAYLOAD_NAMES)
def test_every_payload_is_refused_before_it_runs(tmp_path, name):
    marker = tmp_path / 'marker'
    obj, refused = payload(name, marker)
    path = poisoned_backbone_checkpoint(tmp_path / 'evil.pth', obj)
    with pytest.raises(CheckpointError) as error, safe_checkpoint_loading():
        CheckpointLoader.load_checkpoint(path)
    assert_refused(str(error.value), path, refused, marker)


def test_refused_while_unpickling_too(tmp_path):
    """The unpickler enforces the allowlist itself, not only the scan before it."""
    from convmlp_mm.engine.checkpoint.safe_load import _unpickle_weights_only
    marker = tmp_path / 'marker'
    path = poisoned_backbone_checkpoint(tmp_path / 'evil.pth', Payload(builtins.eval, f'open({str(marker)!r}, "w")'))
    with pytest.raises(Exception, match='eval'):
        _unpickle_weights_only(path, 'cpu')
    assert not marker.exists()


def test_getattr_payload_refused_while_unpickling(tmp_path):
    path = poisoned_backbone_checkpoint(tmp_path / 'evil.pth', Payload(getattr, HistoryBuffer, 'register_statistics'))
    with pytest.raises(CheckpointError, match="getattr.*register_statistics"):
        load_safely(path)


@pytest.mark.parametrize('how', ['resume', 'load_from'])
def test_runner_refuses_payloads(tmp_path, how):
    marker = tmp_path / 'marker'
    toy_runner(tmp_path / 'ok', max_iters=2).train()
    checkpoint = torch.load(tmp_path / 'ok/iter_2.pth', weights_only=False)
    checkpoint['meta']['note'] = Payload(os.system, f'touch {marker}')
    path = tmp_path / 'evil.pth'
    torch.save(checkpoint, path)
    runner = toy_runner(tmp_path / how, max_iters=4, resume=how == 'resume', load_from=str(path))
    with pytest.raises(CheckpointError) as error:
        runner.train()
    assert_refused(str(error.value), path, 'system', marker)
    # mmengine calls no hook after a run raised: the loaders stay the hook's until its after_run
    assert CheckpointLoader._schemes[''] is LOADERS['']
    runner.call_hook('after_run')
    assert CheckpointLoader._schemes[''].__module__ == 'mmengine.runner.checkpoint'


def test_a_failed_run_inside_the_context_leaves_mmengines_loaders(tmp_path):
    """What a long-lived process does: the context restores the loaders the hook installed in
    a run that raised."""
    schemes, method = dict(CheckpointLoader._schemes), CheckpointLoader.__dict__['load_checkpoint']
    runner = toy_runner(tmp_path / 'fails', max_iters=2, load_from=str(tmp_path / 'missing.pth'))
    with pytest.raises(CheckpointNotFoundError):
        with safe_checkpoint_loading():
            runner.train()
    assert CheckpointLoader._schemes == schemes and CheckpointLoader.__dict__['load_checkpoint'] is method
    del runner
    gc.collect()  # the hook's context, left open by the failed run, closes and changes nothing
    assert CheckpointLoader._schemes == schemes and CheckpointLoader.__dict__['load_checkpoint'] is method


def test_a_context_collected_while_open_leaves_a_later_one_in_place():
    """A failed run's hook leaves its context open; collected inside a later context, it does not
    take that one's loaders away, and the later one's exit restores what the first one found."""
    schemes, method = dict(CheckpointLoader._schemes), CheckpointLoader.__dict__['load_checkpoint']
    stale = safe_checkpoint_loading()
    stale.__enter__()
    with safe_checkpoint_loading():
        del stale
        gc.collect()
        assert all(CheckpointLoader._schemes[p] is LOADERS[p] for p in LOADERS)
        assert CheckpointLoader.__dict__['load_checkpoint'] is not method
    assert CheckpointLoader._schemes == schemes and CheckpointLoader.__dict__['load_checkpoint'] is method


def test_init_cfg_file_and_url_refuse_payloads(tmp_path, monkeypatch):
    marker = tmp_path / 'marker'
    served = tmp_path / 'served'
    served.mkdir()
    path = poisoned_backbone_checkpoint(served / 'evil.pth', Payload(builtins.eval, f'open({str(marker)!r}, "w")'))
    for checkpoint in (path, ):
        with pytest.raises(CheckpointError) as error:
            ConvMLP('s', init_cfg=dict(type='Pretrained', checkpoint=checkpoint)).init_weights()
        assert_refused(str(error.value), checkpoint, 'builtins.eval', marker)
    torch.hub.set_dir(str(tmp_path / 'hub'))
    with http_server(served) as base:
        url = f'{base}/evil.pth'
        with pytest.raises(CheckpointError) as error:
            ConvMLP('s', init_cfg=dict(type='Pretrained', checkpoint=url)).init_weights()
        assert_refused(str(error.value), url, 'builtins.eval', marker)
        assert osp.isfile(tmp_path / 'hub/checkpoints/evil.pth')  # downloaded to the cache, then read


def run_tool(args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    return tool_runner.run([sys.executable, *args], cwd, env, timeout=600)


@pytest.fixture(scope='module')
def shapes_dir(tmp_path_factory):
    from convmlp_mm.data import generate
    cwd = tmp_path_factory.mktemp('tools')
    generate(str(cwd / 'data/shapes'), num_train=2, num_val=2, size=(64, 80), seed=1)
    return cwd


def detector_checkpoint_with(path, payload_object):
    """A Mask R-CNN ConvMLP-S quickstart checkpoint (random weights) with the payload in ``meta``."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)  # leaves the process's default scope alone
    cfg = Config.fromfile(osp.join(QUICK, 'mask-rcnn_convmlp-s_shapes.py'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(note=payload_object,
                                                              dataset_meta=dict(classes=('a', 'b', 'c')))), path)
    return path


@pytest.mark.parametrize('tool', ['test.py', 'infer.py', 'convert_checkpoint.py'])
def test_tools_refuse_payloads(shapes_dir, tmp_path, tool):
    marker = tmp_path / 'marker'
    config = osp.join(QUICK, 'mask-rcnn_convmlp-s_shapes.py')
    if tool == 'convert_checkpoint.py':
        path = poisoned_backbone_checkpoint(tmp_path / 'evil.pth', Payload(os.system, f'touch {marker}'))
        args = [osp.join(ROOT, 'tools', tool), path, tmp_path / 'out.pth']
    else:
        path = detector_checkpoint_with(tmp_path / 'evil.pth', Payload(os.system, f'touch {marker}'))
        image = shapes_dir / 'data/shapes/coco/val/val_00000.jpg'
        args = [osp.join(ROOT, 'tools', tool), config, path]
        args += ['--work-dir', tmp_path / 'work'] if tool == 'test.py' else [image, '--out-dir', tmp_path / 'pred']
    proc = run_tool(args, shapes_dir)
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith(('error:', 'convmlp_mm'))
              or 'CheckpointError' in line]
    assert errors, proc.stderr[-3000:]
    assert_refused(errors[-1], path, 'system', marker)
    assert not osp.exists(tmp_path / 'out.pth')


def test_timm_pretrained_file_refuses_payloads(tmp_path):
    timm = pytest.importorskip('timm')
    marker = tmp_path / 'marker'
    path = tmp_path / 'evil.pth'
    state = randomised('s').state_dict()
    state['note'] = Payload(builtins.exec, f'open({str(marker)!r}, "w").close()')
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        timm.create_model('convmlp_s', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert_refused(str(error.value), path, 'builtins.exec', marker)


def test_timm_pretrained_file_loads_the_published_weights(tmp_path):
    timm = pytest.importorskip('timm')
    reference = randomised('s')
    path = tmp_path / 'convmlp_s_imagenet.pth'
    torch.save(reference.state_dict(), path)
    model = timm.create_model('convmlp_s', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), rtol=1e-4, atol=1e-5)
    headless = timm.create_model('convmlp_s', pretrained=True, num_classes=7,
                                 pretrained_cfg_overlay=dict(file=str(path)))
    assert headless.get_classifier().out_features == 7
    assert torch.equal(headless.backbone.tokenizer.block[0].weight, model.backbone.tokenizer.block[0].weight)


# ------------------------------------------------------------ what our stack writes loads
class NumpyMetric:
    """A metric whose value is a numpy float64, as mmseg's IoUMetric reports (``best_score``)."""

    def __new__(cls):
        from mmengine.evaluator import BaseMetric

        class _Metric(BaseMetric):
            def process(self, data_batch, data_samples):
                self.results.extend(float((s['pred'] - s['label']).abs()) for s in data_samples)

            def compute_metrics(self, results):
                return dict(score=np.float64(1.0 / (1.0 + np.mean(results))))

        return _Metric()


def toy_runner(work_dir, max_iters, resume=False, load_from=None, amp=False, one_cycle=False):
    loader = dict(dataset=ToyDataset(), sampler=dict(type='DefaultSampler', shuffle=True), batch_size=2, num_workers=0)
    scheduler = (dict(type='OneCycleLR', eta_max=0.01, total_steps=8, by_epoch=False) if one_cycle else
                 dict(type='MultiStepLR', milestones=[2], by_epoch=False))
    return Runner(model=ToyModel(), experiment_name=experiment_name(), work_dir=str(work_dir), resume=resume,
                  load_from=load_from,
                  train_dataloader=loader, val_dataloader=loader, val_evaluator=[NumpyMetric()],
                  val_cfg=dict(), optim_wrapper=dict(type='CPUAmpOptimWrapper' if amp else 'OptimWrapper',
                                                     optimizer=dict(type='AdamW', lr=0.01)),
                  param_scheduler=scheduler, train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=2),
                  default_hooks=dict(checkpoint=dict(type=CheckpointHook, interval=2, by_epoch=False,
                                                     save_best='score', rule='greater')),
                  custom_hooks=[dict(type='SafeCheckpointLoadHook'), dict(type='RandomStateHook')],
                  randomness=dict(seed=0), env_cfg=dict(dist_cfg=dict(backend='nccl')))


def test_a_full_runner_checkpoint_resumes_without_opt_in(tmp_path, monkeypatch):
    """CheckpointHook (save_best on a numpy metric), OneCycle, AmpOptimWrapper, RandomStateHook;
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD changes nothing; torch's safe globals are as before."""
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    before = list(torch.serialization.get_safe_globals()) if hasattr(torch.serialization, 'get_safe_globals') else []
    toy_runner(tmp_path, max_iters=4, amp=True, one_cycle=True).train()
    names = checkpoint_globals(open(tmp_path / 'iter_4.pth', 'rb').read())
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in names and 'builtins.getattr' in names
    assert any(name.endswith('multiarray._reconstruct') for name in names)
    statistics = dict(HistoryBuffer._statistics_methods)
    runner = toy_runner(tmp_path, max_iters=8, resume=True, amp=True, one_cycle=True)
    runner.train()
    assert runner.iter == 8 and dict(HistoryBuffer._statistics_methods) == statistics
    best = [f for f in os.listdir(tmp_path) if f.startswith('best_score')]
    best_score = load_safely(str(tmp_path / best[0]))['message_hub']['runtime_info']['best_score']
    assert best and type(best_score) is np.float64
    if hasattr(torch.serialization, 'get_safe_globals'):
        assert list(torch.serialization.get_safe_globals()) == before


def test_history_buffer_table_is_restored(tmp_path):
    """A file cannot change HistoryBuffer's class-level statistics table (it maps 'min' to max here)."""
    buffer = HistoryBuffer([1.0, 2.0], [1, 1])
    buffer.__dict__['statistics_methods'] = {'min': HistoryBuffer.max}  # what __getstate__ stores
    path = tmp_path / 'swap.pth'
    torch.save(dict(message_hub=dict(log_scalars=dict(loss=buffer))), path)
    statistics = dict(HistoryBuffer._statistics_methods)
    loaded = load_safely(str(path))['message_hub']['log_scalars']['loss']
    assert dict(HistoryBuffer._statistics_methods) == statistics
    assert loaded.min() == 1.0 and loaded.mean() == 1.5


def test_numpy_1_names_and_published_state_dicts_load(tmp_path):
    """A file written under numpy 1 names numpy.core.*, under numpy 2 numpy._core.*: both load."""
    path = tmp_path / 'np.pth'
    torch.save(dict(state=np.random.RandomState(0).get_state(), value=np.float64(0.5),
                    array=np.arange(6, dtype=np.int64).reshape(2, 3)), path)
    data = open(path, 'rb').read()
    from convmlp_mm.compat import numpy_core
    other = 'numpy.core' if numpy_core() == 'numpy._core' else 'numpy._core'
    renamed = tmp_path / 'np_other.pth'
    renamed.write_bytes(rewrite_module(data, numpy_core(), other))
    for p in (path, renamed):
        loaded = load_safely(str(p))
        assert loaded['value'] == 0.5 and loaded['array'].tolist() == [[0, 1, 2], [3, 4, 5]]
    raw = tmp_path / 'convmlp_s_imagenet.pth'
    torch.save(randomised('s').state_dict(), raw)
    assert set(load_safely(str(raw))) == set(randomised('s').state_dict())


def rewrite_module(data, old, new):
    """The same torch zip file with ``old`` module names in its pickle replaced by ``new``."""
    import io
    import zipfile
    src, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            content = src.read(info.filename)
            if info.filename.endswith('data.pkl'):
                content = content.replace(f'{old}.multiarray\n'.encode(), f'{new}.multiarray\n'.encode())
            dst.writestr(info.filename, content)
    return out.getvalue()


def test_legacy_format_is_scanned(tmp_path):
    path = tmp_path / 'legacy.pth'
    torch.save(dict(weight=torch.ones(2), note=Payload(os.system, 'true')), path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match='system'):
        load_safely(str(path))
    torch.save(dict(weight=torch.ones(2)), path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_safely(str(path))['weight'], torch.ones(2))


def test_mm_detector_and_segmentor_checkpoints_load(tmp_path):
    """Checkpoints written by tools/train.py runs (dataset_meta etc.) are covered by
    tests/test_tools.py, which tests them through tools/test.py; here the mm layout by hand."""
    path = detector_checkpoint_with(tmp_path / 'det.pth', np.float32(1.5))
    with safe_checkpoint_loading():
        loaded = CheckpointLoader.load_checkpoint(str(path))
    assert loaded['meta']['dataset_meta']['classes'] == ('a', 'b', 'c')


# ------------------------------------------------------------------------------- opting in
def test_trusted_file_loads_with_a_warning_and_its_hash(tmp_path, caplog):
    path = tmp_path / 'legacy.pth'
    torch.save(dict(state_dict={}, meta=dict(fn=functools.partial(int, base=2))), path)
    with pytest.raises(CheckpointError, match='functools.partial'):
        load_safely(str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    trust_checkpoint(str(tmp_path / 'legacy.pth'), sha256='0' * 64)
    with pytest.raises(CheckpointError, match='SHA-256'):
        load_safely(str(path))
    trust_checkpoint(str(path), sha256=digest)
    assert load_safely(str(path))['meta']['fn']('11') == 3
    with pytest.raises(ValueError, match='64 hexadecimal'):
        trust_checkpoint(str(path), sha256='abc')


def test_init_cfg_sha256_is_checked_before_unpickling(tmp_path):
    path = tmp_path / 'convmlp_s_imagenet.pth'
    torch.save(randomised('s').state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    ConvMLP('s', init_cfg=dict(type='Pretrained', checkpoint=str(path), sha256=digest)).init_weights()
    with pytest.raises(CheckpointError, match='SHA-256'):
        ConvMLP('s', init_cfg=dict(type='Pretrained', checkpoint=str(path), sha256='f' * 64)).init_weights()


def test_every_mmengine_scheme_has_a_safe_loader_inside_the_context_only():
    """Outside the context mmengine's loaders are mmengine's; inside, each of its schemes is ours,
    a scheme another package registered (here a user's own '' loader is not: mmengine's is) stays."""
    before = dict(CheckpointLoader._schemes)
    method = CheckpointLoader.__dict__['load_checkpoint']
    assert set(before) == set(LOADERS)
    not_mmengines = {prefix: loader.__module__ for prefix, loader in before.items()
                     if loader.__module__ != 'mmengine.runner.checkpoint'}
    assert not not_mmengines, f'loaders left registered outside the context: {not_mmengines}'

    def foreign(filename, map_location=None):
        return {'foreign': filename}
    CheckpointLoader.register_scheme('foreign://', foreign)
    try:
        with safe_checkpoint_loading():
            assert all(CheckpointLoader._schemes[p] is LOADERS[p] for p in LOADERS)
            assert CheckpointLoader._schemes['foreign://'] is foreign
            assert CheckpointLoader.load_checkpoint('foreign://x') == {'foreign': 'foreign://x'}
        assert CheckpointLoader.__dict__['load_checkpoint'] is method
        assert {p: CheckpointLoader._schemes[p] for p in before} == before
    finally:
        del CheckpointLoader._schemes['foreign://']


def test_a_users_own_local_scheme_is_left_alone(tmp_path):
    """The common torch>=2.6 workaround: a user's '' loader; ours does not replace it."""
    def own(filename, map_location=None):
        return {'own': filename}
    original = CheckpointLoader._schemes['']
    CheckpointLoader._schemes[''] = own
    try:
        with safe_checkpoint_loading():
            assert CheckpointLoader.load_checkpoint(str(tmp_path / 'x.pth')) == {'own': str(tmp_path / 'x.pth')}
        assert CheckpointLoader._schemes[''] is own
    finally:
        CheckpointLoader._schemes[''] = original


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    missing = str(tmp_path / 'missing.pth')
    for read in (lambda: load_safely(missing), lambda: load_checkpoint(missing)):
        with pytest.raises(FileNotFoundError, match='missing.pth'):
            read()
    with pytest.raises(FileNotFoundError, match='missing.pth'), safe_checkpoint_loading():
        CheckpointLoader.load_checkpoint(missing)
    with pytest.raises(CheckpointError):  # and still one of ours
        load_checkpoint(missing)


@pytest.mark.skipif(not hasattr(torch.serialization, 'add_safe_globals'), reason='torch < 2.4: no add_safe_globals')
def test_the_users_safe_globals_are_honoured(tmp_path):
    path = tmp_path / 'partial.pth'
    torch.save(dict(fn=functools.partial(int, base=2)), path)
    with pytest.raises(CheckpointError, match='functools.partial'):
        load_safely(str(path))
    before = list(torch.serialization.get_safe_globals())
    torch.serialization.add_safe_globals([functools.partial, int])
    try:
        assert load_safely(str(path))['fn']('101') == 5
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


# -------------------------------------------------------------------------------- helpers
class http_server:
    """A loopback HTTP server over ``folder`` for the duration of a ``with``."""

    def __init__(self, folder):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *args: None
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f'http://127.0.0.1:{self.server.server_address[1]}'

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_trust_from_the_config_key_and_the_command_line(tmp_path):
    from mmengine.config import Config
    from convmlp_mm.cli import trust_from
    files = []
    for name in ('by_config.pth', 'by_cli.pth'):
        path = tmp_path / name
        torch.save(dict(fn=functools.partial(int, base=2)), path)
        files.append(path)
    digest = hashlib.sha256(files[1].read_bytes()).hexdigest()
    for path in files:
        with pytest.raises(CheckpointError, match='functools.partial'):
            load_safely(str(path))
    trust_from(Config(dict(trusted_checkpoints=[dict(file=str(files[0]))])), [f'{files[1]}:{digest}'])
    assert [load_safely(str(p))['fn']('101') for p in files] == [5, 5]
    with pytest.raises(ValueError, match="'file'"):
        trust_from(Config(dict(trusted_checkpoints=[dict(path='x')])))


# ------------------------------------------------------------- what importing changes: nothing
LOAD_OWN = '''
import argparse, pathlib, sys, torch
if sys.argv[1] == 'with':
    import convmlp_mm  # noqa: F401
from mmengine.runner import load_checkpoint
model = torch.nn.Linear(2, 2)
try:
    checkpoint = load_checkpoint(model, sys.argv[2], map_location='cpu')
    print('loaded', type(checkpoint['meta']['args']).__name__, type(checkpoint['meta']['root']).__name__)
except Exception as error:
    print('failed', type(error).__name__)
'''


def test_mmengine_reads_a_users_checkpoint_as_it_did_before_the_import(tmp_path):
    """A user's own checkpoint with argparse.Namespace and pathlib.Path in its meta: mmengine's
    load_checkpoint gives the same outcome with and without `import convmlp_mm` (on torch < 2.6,
    where mmengine reads any pickle, it loads; on newer torch mmengine's weights-only default
    refuses it either way)."""
    import argparse
    import pathlib
    path = tmp_path / 'own.pth'
    torch.save(dict(state_dict=torch.nn.Linear(2, 2).state_dict(),
                    meta=dict(args=argparse.Namespace(lr=0.1), root=pathlib.Path('/data'))), path)
    outcomes = [subprocess.run([sys.executable, '-c', LOAD_OWN, how, str(path)], capture_output=True, text=True,
                               timeout=300, check=True).stdout.strip().splitlines()[-1] for how in ('without', 'with')]
    assert outcomes[0] == outcomes[1]
    if not hasattr(torch.serialization, 'safe_globals'):  # torch < 2.4: mmengine's plain torch.load
        assert outcomes[1] == 'loaded Namespace PosixPath'


PEAK = '''
import resource, sys, torch
from convmlp_mm.engine.checkpoint import load_safely
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
state = load_safely(sys.argv[1])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
'''


def test_reading_keeps_one_copy_of_the_file_in_memory(tmp_path):
    """A 256 MB checkpoint raises the peak memory by about its size, not twice it."""
    path = tmp_path / 'big.pth'
    torch.save(dict(state_dict=dict(weight=torch.zeros(64 * 1024 * 1024))), path)
    size = path.stat().st_size
    grown = int(subprocess.run([sys.executable, '-c', PEAK, str(path)], capture_output=True, text=True, timeout=300,
                               check=True).stdout.split()[-1])
    assert grown < 1.4 * size, f'peak memory grew by {grown / size:.2f}x the file size'
