"""Published checkpoints: loading, conversion round trip, same F1-F4 and logits; strict errors."""
import pytest
import torch

from convmlp_mm import mmpretrain_to_published, published_to_mmpretrain
from convmlp_mm.engine.checkpoint import load_checkpoint
from convmlp_mm.mm import ConvMLP, PureMLP  # init_cfg
from published_convmlp import randomised


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def _published(arch, tmp_path_factory):
    """(arch, reference model, path of its raw state dict)."""
    model = randomised(arch)
    path = tmp_path_factory.mktemp('ckpt') / f'convmlp_{arch}_imagenet.pth'
    torch.save(model.state_dict(), path)
    return arch, model, path


@pytest.fixture(scope='module', params=['s', 'm', 'l'])
def published(request, tmp_path_factory):
    return _published(request.param, tmp_path_factory)


@pytest.fixture(scope='module')
def published_s(tmp_path_factory):
    """For what does not depend on the arch."""
    return _published('s', tmp_path_factory)


def test_published_checkpoint_reproduces_features(published):
    arch, reference, path = published
    model = ConvMLP(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    x = torch.rand(2, 3, 97, 131)
    with torch.no_grad():
        ours, theirs = model(x), reference.forward_taps(x)[0]
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and rel_err(a, b) < 1e-5


@pytest.mark.parametrize('wrap', ['state_dict', 'model', 'module', 'backbone'])
def test_wrapped_and_prefixed_checkpoints_load(published_s, tmp_path, wrap):
    _, reference, _ = published_s
    state = reference.state_dict()
    if wrap in ('module', 'backbone'):
        state = {f'{wrap}.{k}': v for k, v in state.items()}
        if wrap == 'backbone':  # an mm detector: other parts are ignored, the head is gone
            state = {k: v for k, v in state.items() if not k.startswith(('backbone.norm.', 'backbone.head.'))}
            state['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
        checkpoint = dict(state_dict=state, meta=dict(epoch=12))
    else:
        checkpoint = {wrap: state}
    path = tmp_path / 'ckpt.pth'
    torch.save(checkpoint, path)
    model = ConvMLP('s', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    torch.testing.assert_close(model.state_dict()['stages.2.blocks.1.connect.weight'],
                               reference.state_dict()['stages.2.blocks.1.connect.weight'])


def test_converter_round_trip_has_no_missing_or_unexpected_keys(published):
    arch, reference, _ = published
    state = reference.state_dict()
    converted = published_to_mmpretrain(state)
    assert published_to_mmpretrain(converted) == converted  # recognises an already converted one
    back = mmpretrain_to_published(converted)
    assert back.keys() == state.keys()
    assert all(back[k] is state[k] for k in state)
    backbone_keys = {k[len('backbone.'):] for k in converted if k.startswith('backbone.')}
    assert backbone_keys == set(ConvMLP(arch).state_dict())


def test_mmpretrain_classifier_gives_the_published_logits(published):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    arch, reference, _ = published
    dims = {'s': 512, 'm': 512, 'l': 768}[arch]
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # whatever scope an earlier runner left
        model = MODELS.build(dict(type='ImageClassifier', backbone=dict(type='ConvMLP', arch=arch, out_indices=-1),
                                  head=dict(type='MLPClsHead', num_classes=1000, in_channels=dims)))
    model.load_state_dict(published_to_mmpretrain(reference.state_dict()), strict=True)
    model.eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert rel_err(model(x, mode='tensor'), reference(x)) < 1e-5


def test_timm_model_loads_published_file(published_s):
    import timm
    _, reference, path = published_s
    model = timm.create_model('convmlp_s', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.rand(1, 3, 160, 192)
    with torch.no_grad():
        assert rel_err(model(x), reference(x)) < 1e-5


def _save(tmp_path, state):
    path = tmp_path / 'bad.pth'
    torch.save(state, path)
    return str(path)


def test_unexpected_and_missing_keys_are_listed(published_s, tmp_path):
    _, reference, _ = published_s
    state = dict(reference.state_dict())
    state['stages.0.extra.weight'] = torch.zeros(1)
    del state['tokenizer.block.0.weight']
    path = _save(tmp_path, state)
    with pytest.raises(RuntimeError) as error:
        ConvMLP('s', init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()
    message = str(error.value)
    assert path in message and 'stages.0.extra.weight' in message and 'tokenizer.block.0.weight' in message


def test_other_arch_names_keys_and_shapes(published_s):
    _, _, path = published_s
    with pytest.raises(RuntimeError) as error:
        ConvMLP('m', init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()
    message = str(error.value)
    assert 'missing keys' in message and '(arch m)' in message
    assert 'stages.0.blocks.0.channel_mlp1.fc1.weight: checkpoint (256, 128) vs model (384, 128)' in message


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / 'truncated.pth'
    torch.save(ConvMLP('s').state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(RuntimeError, match=r'cannot load checkpoint .*truncated.pth.*: the file is truncated or '
                                           r'corrupt \(.*\); expected a complete file written by torch.save'):
        ConvMLP('s', init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()


class NotAllowed:
    pass


def test_a_refused_global_is_named(tmp_path):
    path = tmp_path / 'pickled.pth'
    torch.save(dict(state_dict=ConvMLP('s').state_dict(), extra=NotAllowed()), path)
    with pytest.raises(RuntimeError, match=r"cannot load checkpoint .*pickled.pth.*test_checkpoints.NotAllowed"):
        load_checkpoint(str(path))


def test_an_unknown_open_mmlab_name_says_so():
    with pytest.raises(RuntimeError, match=r"cannot load checkpoint 'open-mmlab://resnet51_v1c': 'resnet51_v1c' is "
                                           r'not a model name of open-mmlab://; expected one of the \d+ names '
                                           r'mmengine knows there \(e.g. '):
        load_checkpoint('open-mmlab://resnet51_v1c')


@pytest.mark.skipif(torch.cuda.is_available(), reason='the error is that of a machine without a GPU')
def test_cuda_tensors_on_a_machine_without_a_gpu_say_map_location(tmp_path, monkeypatch):
    path = tmp_path / 'gpu.pth'
    with monkeypatch.context() as patch:  # saved as a GPU machine saves: storages tagged cuda:0
        patch.setattr(torch.serialization, 'location_tag', lambda storage: 'cuda:0')
        torch.save(ConvMLP('s').state_dict(), path)
    with pytest.raises(RuntimeError, match="saved on a CUDA device and this machine has no GPU; expected "
                                           "map_location='cpu'"):
        load_checkpoint(str(path))
    assert set(load_checkpoint(str(path), map_location='cpu')) == set(ConvMLP('s').state_dict())


def test_pure_mlp_round_trips_its_own_checkpoint(tmp_path):
    source = PureMLP('s')
    path = _save(tmp_path, dict(state_dict={f'backbone.{k}': v for k, v in source.state_dict().items()}))
    model = PureMLP('s', init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
