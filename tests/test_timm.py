"""A good citizen of timm: timm's own model tests pass on our six models, the timm API behaves as
timm documents, mmpretrain's TIMMBackbone takes them, and every layer is a module call."""
import os.path as osp
import re
import sys

import pytest
import timm
import torch

import convmlp_mm  # noqa: F401  (registers the timm models)
from convmlp_mm import ConvMLP, PureMLP

import tool_runner

TIMM_TESTS = osp.join(sys.prefix, 'share', f'timm-{timm.__version__}')
MODELS = ['convmlp_s', 'convmlp_m', 'convmlp_l', 'pure_mlp_s', 'pure_mlp_m', 'pure_mlp_l']


@pytest.mark.slow  # timm's own suite in a separate pytest run
def test_timms_own_model_tests_pass():
    """timm's tests/test_models.py (from its sdist, fetched by tools/setup_env.sh) on our models,
    apart from the two that download the published weights (no network here)."""
    if not osp.isfile(osp.join(TIMM_TESTS, 'tests', 'test_models.py')):
        pytest.skip(f'{TIMM_TESTS}/tests is missing: tools/setup_env.sh fetches timm {timm.__version__}\'s sdist')
    result = tool_runner.run(
        [sys.executable, '-m', 'pytest', '-p', 'convmlp_mm', '-p', 'no:cacheprovider', '-q', 'tests/test_models.py',
         '-k', '(convmlp or pure_mlp) and not load_pretrained and not features_pretrained'], TIMM_TESTS, timeout=1200)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-4000:]
    passed = int(re.search(r'(\d+) passed', summary).group(1))
    assert 'failed' not in summary and passed >= 48, summary  # timm 1.0.31: 48 tests over the six models


@pytest.mark.parametrize('name', ['convmlp_s', 'pure_mlp_s'])
def test_scripted_and_traced_models_give_the_eager_outputs(name):
    model = timm.create_model(name, num_classes=7).eval()
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(torch.jit.script(model)(x), expected, atol=1e-5)
        assert torch.allclose(torch.fx.symbolic_trace(model)(x), expected, atol=1e-5)


def test_in_chans_adapts_the_first_conv_of_pretrained_weights(tmp_path):
    source = timm.create_model('convmlp_s')
    path = tmp_path / 'convmlp_s.pth'
    torch.save(source.state_dict(), path)
    gray = timm.create_model('convmlp_s', pretrained=True, in_chans=1, pretrained_cfg_overlay=dict(file=str(path)))
    rgb = source.state_dict()['backbone.tokenizer.block.0.weight']
    assert torch.allclose(gray.state_dict()['backbone.tokenizer.block.0.weight'], rgb.sum(dim=1, keepdim=True))
    assert gray(torch.rand(1, 1, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize('pool, shape', [('avg', (2, 512)), ('max', (2, 512)), ('avgmax', (2, 512)),
                                         ('', (2, 512, 2, 3))])
def test_global_pool_choices(pool, shape):
    model = timm.create_model('convmlp_s', num_classes=0, global_pool=pool).eval()
    assert model(torch.rand(2, 3, 64, 96)).shape == shape
    with pytest.raises(ValueError, match="global_pool='token' is not supported: choose one of"):
        timm.create_model('convmlp_s', global_pool='token')


def test_grad_checkpointing_and_intermediates_follow_timm():
    model = timm.create_model('convmlp_s').train()
    x = torch.rand(2, 3, 64, 64)
    torch.manual_seed(0)
    final, inter = model.forward_intermediates(x)
    assert [f.shape[1] for f in inter] == [64, 128, 256, 512] and torch.equal(final, inter[-1])
    assert [f.shape[1] for f in model.forward_intermediates(x, indices=2, intermediates_only=True)] == [256, 512]
    model.set_grad_checkpointing()
    assert all(m.with_cp for m in model.modules() if hasattr(m, 'with_cp'))
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x), model.forward_intermediates(x)[0])
    assert model.prune_intermediate_layers(indices=2) == [2, 3] and model.num_classes == 0


def test_group_matcher_orders_stem_stages_head():
    from timm.models._manipulate import group_parameters
    model = timm.create_model('convmlp_s')
    for coarse in (True, False):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        first = {name: group for group, names in groups.items() for name in names}
        assert first['backbone.tokenizer.block.0.weight'] == 0
        assert first['backbone.conv_stages.downsample.weight'] < first['backbone.stages.0.blocks.0.norm1.weight']
        # timm's (99999,): the previous group
        assert first['backbone.stages.2.blocks.1.norm1.weight'] == first['norm.weight']
        assert len(groups) == (6 if coarse else 11)  # stem, conv stage, 3 stages or 8 blocks, head


def test_timm_backbone_of_mmpretrain_takes_our_models():
    import mmpretrain.models  # noqa: F401  (registers TIMMBackbone)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        backbone = MODELS.build(dict(type='TIMMBackbone', model_name='convmlp_s', features_only=True,
                                     pretrained=False))
    backbone.eval()  # not chained: mmpretrain's TIMMBackbone.train returns None
    feats = backbone(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 16, 24), (1, 128, 8, 12), (1, 256, 4, 6), (1, 512, 2, 3)]


#: timm's feature extractors (``features_only=True, feature_cls=...``); None is the default, 'getter'.
FEATURE_CLASSES = [None, 'hook', 'fx', 'dict', 'list']


@pytest.fixture(scope='module')
def weights_files(tmp_path_factory):
    """name -> (a checkpoint of random weights, an image, F1-F4 of the classifier with them)."""
    files, x = {}, torch.rand(1, 3, 65, 97)
    for name in ('convmlp_s', 'pure_mlp_s'):
        torch.manual_seed(0)
        model = timm.create_model(name).eval()
        path = tmp_path_factory.mktemp('features') / f'{name}.pth'
        torch.save(model.state_dict(), path)
        with torch.no_grad():
            files[name] = str(path), x, model.forward_intermediates(x, intermediates_only=True)
    return files


@pytest.mark.parametrize('name', ['convmlp_s', 'pure_mlp_s'])
@pytest.mark.parametrize('feature_cls', FEATURE_CLASSES)
def test_every_feature_cls_gives_f1_to_f4(weights_files, name, feature_cls):
    """The pretrained weights load before timm's wrapper, and each extractor gives the same maps."""
    path, x, expected = weights_files[name]
    kwargs = dict(feature_cls=feature_cls) if feature_cls else {}
    model = timm.create_model(name, features_only=True, pretrained=True, pretrained_cfg_overlay=dict(file=path),
                              **kwargs).eval()
    assert model.feature_info.channels() == [64, 128, 256, 512] and model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        maps = model(x)
    maps = list(maps.values()) if isinstance(maps, dict) else maps
    assert len(maps) == 4 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(maps, expected))


@pytest.mark.parametrize('feature_cls', FEATURE_CLASSES)
def test_feature_extractors_take_out_indices_in_chans_and_grad_checkpointing(feature_cls):
    kwargs = dict(feature_cls=feature_cls) if feature_cls else {}
    model = timm.create_model('convmlp_s', features_only=True, out_indices=(1, 3), in_chans=1, **kwargs).train()
    assert model.feature_info.channels() == [128, 512]
    if feature_cls is None:  # timm's getter has no set_grad_checkpointing (nor has fx's): the classifier's
        model.model.set_grad_checkpointing()
    elif feature_cls != 'fx':
        model.set_grad_checkpointing()
    maps = model(torch.rand(1, 1, 64, 96))
    maps = list(maps.values()) if isinstance(maps, dict) else maps
    assert [tuple(f.shape) for f in maps] == [(1, 128, 8, 12), (1, 512, 2, 3)]
    sum(f.sum() for f in maps).backward()
    first_conv = next(p for name, p in model.named_parameters() if name.endswith('tokenizer.block.0.weight'))
    assert first_conv.shape[1] == 1 and first_conv.grad is not None


@pytest.mark.parametrize('out_indices', [(1, 2, 3, 4), 5])
def test_a_fifth_feature_level_is_refused_saying_what_to_pass(out_indices):
    """Hugging Face's DETRs ask a timm backbone for five levels with ``use_timm_backbone=True``."""
    with pytest.raises(ValueError, match=r"convmlp_s has four feature levels.*not \[(4|-5)\].*"
                                         r"TimmBackboneConfig\(backbone='convmlp_s', out_indices=\(1, 2, 3\)\)"):
        timm.create_model('convmlp_s', features_only=True, out_indices=out_indices)


def test_torchvision_extractors_take_the_module_names_of_feature_info():
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.feature_extraction import create_feature_extractor
    x = torch.rand(1, 3, 65, 97)
    classifier = timm.create_model('convmlp_s').eval()
    nodes = {info['module']: str(i) for i, info in enumerate(classifier.feature_info)}
    chain = timm.create_model('convmlp_s', features_only=True, feature_cls='dict').eval()  # children in turn
    layers = {name: str(i) for i, name in enumerate(chain.feature_info.module_name())}
    fpn = BackboneWithFPN(chain, layers, chain.feature_info.channels(), out_channels=32).eval()
    with torch.no_grad():
        expected = classifier.forward_intermediates(x, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(create_feature_extractor(classifier, nodes)(x).values(),
                                                     expected))
        expected = list(chain(x).values())
        assert all(torch.equal(a, b) for a, b in zip(IntermediateLayerGetter(chain, layers)(x).values(), expected))
        pyramid = fpn(x)
    assert [tuple(f.shape) for f in pyramid.values()] == [(1, 32, 17, 25), (1, 32, 9, 13), (1, 32, 5, 7),
                                                         (1, 32, 3, 4), (1, 32, 2, 2)]


@pytest.mark.parametrize('family, arch', [(ConvMLP, 's'), (PureMLP, 's'), (ConvMLP, 'table2-row3')])
@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_every_layer_is_a_module_call(family, arch, mode):
    """A forward hook on every leaf module fires, in train and eval mode: hooks, FLOP counters
    and feature extractors see each layer."""
    model = family(arch)
    model.train(mode == 'train')
    called = set()
    leaves = {name: m for name, m in model.named_modules() if not list(m.children())}
    for name, module in leaves.items():
        module.register_forward_hook(lambda m, i, o, name=name: called.add(name))
    model(torch.rand(2, 3, 64, 64))
    assert sorted(set(leaves) - called) == []


@pytest.fixture(scope='module')
def published_s(tmp_path_factory):
    """A published-layout ConvMLP-S checkpoint (raw state dict with norm.* and head.*)."""
    torch.manual_seed(0)
    model = timm.create_model('convmlp_s')
    path = tmp_path_factory.mktemp('timm') / 'convmlp_s_imagenet.pth'
    torch.save(model.state_dict(), path)
    return str(path), model.state_dict()


@pytest.mark.parametrize('kwargs', [dict(num_classes=0), dict(num_classes=10), dict(num_classes=1000),
                                    dict(num_classes=0, global_pool=''), dict(num_classes=0, global_pool='max'),
                                    dict(in_chans=1, num_classes=0)])
def test_pretrained_takes_the_files_backbone_whatever_the_head(published_s, kwargs):
    path, source = published_s
    model = timm.create_model('convmlp_s', pretrained=True, pretrained_cfg_overlay=dict(file=path), **kwargs)
    own = model.state_dict()
    for key, value in source.items():
        if key.startswith('head.'):
            continue
        if key == 'backbone.tokenizer.block.0.weight' and kwargs.get('in_chans') == 1:
            value = value.sum(dim=1, keepdim=True)
        assert torch.equal(own[key], value), key
    if kwargs.get('num_classes') == 1000:
        assert torch.equal(own['head.weight'], source['head.weight'])
    elif kwargs.get('num_classes'):
        assert own['head.weight'].shape == (kwargs['num_classes'], 512)
    else:
        assert not any(k.startswith('head.') for k in own)


def test_pooled_embedding_and_reset_classifier_follow_timm(published_s):
    path, _ = published_s
    model = timm.create_model('convmlp_s', pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=path))
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        embedding = model(x)
        assert embedding.shape == (2, 512)
        full = timm.create_model('convmlp_s', pretrained=True, pretrained_cfg_overlay=dict(file=path)).eval()
        assert torch.allclose(full.forward_head(full.forward_features(x), pre_logits=True), embedding, atol=1e-6)
        model.reset_classifier(5)
        assert model(x).shape == (2, 5) and model.get_classifier().out_features == 5
        model.reset_classifier(0, global_pool='')
        assert model(x).shape == (2, 512, 2, 2)
