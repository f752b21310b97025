"""A plugin, not a patch: importing convmlp_mm registers names and changes nothing else, and the
models work where OpenMMLab cannot be imported."""
import os
import os.path as osp
import subprocess
import sys
import sysconfig
import textwrap

import pytest
import torch

pytestmark = pytest.mark.slow  # fresh interpreters

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: Run in a fresh process: the host libraries with their own modules registered, a snapshot of every
#: attribute of every imported module of theirs (and of every class in them) and of every registry
#: entry and checkpoint scheme, then ``import convmlp_mm``, then the same snapshot again.
SNAPSHOT = textwrap.dedent('''
    import importlib, json, os, sys, warnings
    import torch
    HOSTS = ('torch', 'mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'timm')
    for name in ('mmcv.ops', 'mmcv.cnn', 'mmengine.runner', 'mmengine.fileio', 'mmengine.dist', 'mmengine.model',
                 'mmengine.optim', 'mmdet.models', 'mmseg.models', 'mmpretrain.models', 'mmdet.engine',
                 'mmseg.engine', 'mmpretrain.engine', 'timm.models'):
        importlib.import_module(name)
    for host in ('mmdet', 'mmseg', 'mmpretrain'):
        importlib.import_module(f'{host}.utils').register_all_modules(init_default_scope=False)
    from mmengine.registry import Registry
    from mmengine.runner.checkpoint import CheckpointLoader

    def snapshot():
        seen, registries = {}, {}
        for name, module in list(sys.modules.items()):
            if module is None or name.split('.')[0] not in HOSTS:
                continue
            for attr, value in list(vars(module).items()):
                seen[f'{name}:{attr}'] = id(value)
                if isinstance(value, type) and value.__module__ == name:
                    for key, member in list(vars(value).items()):
                        seen[f'{name}:{attr}.{key}'] = id(member)
                if isinstance(value, Registry) and id(value) not in registries:
                    registries[id(value)] = value
        for registry in registries.values():
            for key, cls in registry._module_dict.items():
                seen[f'registry {registry.scope}.{registry.name}:{key}'] = id(cls)
        for prefix, loader in CheckpointLoader._schemes.items():
            seen[f'scheme {prefix}'] = id(loader)
        settings = dict(environ=dict(os.environ), threads=torch.get_num_threads(), dtype=str(torch.get_default_dtype()),
                        grad=torch.is_grad_enabled(), deterministic=torch.are_deterministic_algorithms_enabled(),
                        cudnn=torch.backends.cudnn.benchmark, warnings=len(warnings.filters),
                        safe_globals=[str(g) for g in getattr(torch.serialization, 'get_safe_globals', list)()])
        return seen, settings

    before, settings = snapshot()
    import convmlp_mm
    after, settings_after = snapshot()
    changed = sorted(key for key, value in before.items() if key in after and after[key] != value)
    gone = sorted(key for key in before if key not in after)
    print(json.dumps(dict(changed=changed, gone=gone, settings=settings == settings_after, checked=len(before),
                          added=sorted(k for k in after if k.startswith('registry') and k not in before))))
''')


def test_import_replaces_nothing_the_hosts_had():
    proc = subprocess.run([sys.executable, '-c', SNAPSHOT], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['checked'] > 50000  # the snapshot saw the hosts
    assert result['changed'] == [] and result['gone'] == []
    assert result['settings'], 'a global setting (environment, threads, dtype, warnings, safe globals) changed'
    added = result['added']
    for name in ('mmdet.model:ConvMLP', 'mmseg.model:PureMLP', 'mmpretrain.model:MLPClsHead',
                 'mmengine.hook:SafeCheckpointLoadHook', 'mmengine.loop:ResumableEpochBasedTrainLoop',
                 'mmengine.model_wrapper:CPUDistributedDataParallel', 'mmengine.optim_wrapper:CPUAmpOptimWrapper'):
        assert f'registry {name}' in added, name


#: The OpenMMLab packages, hidden from a subprocess.
OPENMMLAB = ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmsegmentation', 'mmpretrain', 'mim', 'openmim')


@pytest.fixture(scope='module')
def without_openmmlab(tmp_path_factory):
    """A ``sys.path`` folder holding every package of this environment but OpenMMLab's (links),
    for ``python -S``: the OpenMMLab packages are then not installed as far as Python can tell."""
    site = sysconfig.get_paths()['purelib']
    farm = tmp_path_factory.mktemp('site')
    for entry in os.listdir(site):
        top = entry.split('-')[0].split('.')[0].lower()
        if top in OPENMMLAB or entry.endswith('.pth') or entry.startswith('__editable__'):
            continue
        os.symlink(osp.join(site, entry), farm / entry)
    return farm


def run_without_openmmlab(farm, code, tmp_path):
    env = dict(os.environ, PYTHONPATH=f'{ROOT}:{farm}', TORCH_HOME=str(tmp_path / 'torch'))
    return subprocess.run([sys.executable, '-S', '-c', code], capture_output=True, text=True, timeout=600, env=env,
                          cwd=str(tmp_path))


def test_models_and_timm_work_without_openmmlab(without_openmmlab, tmp_path):
    pytest.importorskip('timm')
    from published_convmlp import randomised
    for arch in 'sml':
        reference = randomised(arch).eval()
        torch.save(reference.state_dict(), tmp_path / f'convmlp_{arch}_imagenet.pth')
        x = torch.linspace(-1, 1, 2 * 3 * 64 * 96).reshape(2, 3, 64, 96)
        with torch.no_grad():
            feats, logits = reference.forward_taps(x)[0], reference(x)
        torch.save(dict(feats=feats, logits=logits), tmp_path / f'expected_{arch}.pt')
    code = textwrap.dedent('''
        import importlib.util, sys
        import timm, torch
        import convmlp_mm
        assert all(importlib.util.find_spec(m) is None for m in ('mmengine', 'mmcv', 'mmdet'))
        x = torch.linspace(-1, 1, 2 * 3 * 64 * 96).reshape(2, 3, 64, 96)
        for arch in 'sml':
            file = f'convmlp_{arch}_imagenet.pth'
            expected = torch.load(f'expected_{arch}.pt')
            model = timm.create_model(f'convmlp_{arch}', pretrained=True, pretrained_cfg_overlay=dict(file=file)).eval()
            features = timm.create_model(f'convmlp_{arch}', pretrained=True, features_only=True,
                                         pretrained_cfg_overlay=dict(file=file)).eval()
            with torch.no_grad():
                logits, feats = model(x), features(x)
            torch.testing.assert_close(logits, expected['logits'], rtol=1e-4, atol=1e-4)
            assert len(feats) == 4
            for ours, theirs in zip(feats, expected['feats']):
                torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
        pure = timm.create_model('pure_mlp_s', features_only=True).eval()
        assert [f.shape[1] for f in pure(x)] == [64, 128, 256, 512]
        backbone = convmlp_mm.ConvMLP('s')
        backbone.load_pretrained('convmlp_s_imagenet.pth')
        assert convmlp_mm.ConvMLP is convmlp_mm.models.ConvMLP and type(backbone).__mro__[1] is torch.nn.Module
        assert not hasattr(convmlp_mm, 'mm') and not hasattr(convmlp_mm, 'engine')
        print('loaded', sorted(m for m in sys.modules if m.split('.')[0] in ('mmengine', 'mmcv', 'mmdet')))
    ''')
    proc = run_without_openmmlab(without_openmmlab, code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 'loaded []' in proc.stdout


def test_an_installed_host_that_fails_to_import_is_reported(tmp_path):
    """A broken mmdet is not skipped as if absent: its own error comes through."""
    broken = tmp_path / 'mmdet'
    broken.mkdir()
    (broken / '__init__.py').write_text("raise ImportError('mmdet is broken here')\n")
    env = dict(os.environ, PYTHONPATH=f'{tmp_path}:{ROOT}')
    proc = subprocess.run([sys.executable, '-c', 'import convmlp_mm'], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode != 0 and 'mmdet is broken here' in proc.stderr
