"""The detection libraries users already have, with a ConvMLP backbone (docs/usage.md, "Other
detection libraries"): torchvision's RetinaNet and Faster R-CNN on a timm FPN backbone, Hugging
Face's DETR, Conditional DETR and Deformable DETR on ``TimmBackboneConfig``. Tiny inputs: each
recipe trains a step and predicts."""
import pytest
import torch

import convmlp_mm  # noqa: F401  (registers the timm models, which both libraries create by name)

pytestmark = pytest.mark.slow

IMAGES = [torch.rand(3, 128, 160), torch.rand(3, 120, 144)]


# -------------------------------------------------------------------------------- torchvision
def convmlp_fpn(name, out_indices, **kwargs):
    import timm
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    chain = timm.create_model(name, features_only=True, feature_cls='dict', out_indices=out_indices)
    layers = {module: str(i) for i, module in enumerate(chain.feature_info.module_name())}
    return BackboneWithFPN(chain, layers, chain.feature_info.channels(), out_channels=256, **kwargs)


@pytest.mark.parametrize('detector', ['retinanet', 'faster_rcnn'])
def test_torchvision_detector_trains_and_predicts(detector):
    from torchvision.models.detection import FasterRCNN, RetinaNet
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    torch.manual_seed(0)
    if detector == 'retinanet':  # P3-P7: the five levels of its default anchors
        model = RetinaNet(convmlp_fpn('convmlp_s', (1, 2, 3), extra_blocks=LastLevelP6P7(256, 256)),
                          num_classes=4, min_size=128, max_size=160, score_thresh=0.0, detections_per_img=7)
        names = {'classification', 'bbox_regression'}
    else:  # P2-P6: its default anchors and RoI pooler ('0'-'3')
        model = FasterRCNN(convmlp_fpn('convmlp_s', (0, 1, 2, 3)), num_classes=4, min_size=128, max_size=160,
                           box_score_thresh=0.0, box_detections_per_img=7)
        names = {'loss_classifier', 'loss_box_reg', 'loss_objectness', 'loss_rpn_box_reg'}
    levels = ['0', '1', '2', 'p6', 'p7'] if detector == 'retinanet' else ['0', '1', '2', '3', 'pool']
    assert list(model.backbone(torch.rand(1, 3, 128, 160))) == levels
    targets = [dict(boxes=torch.tensor([[10., 20., 60., 90.]]), labels=torch.tensor([1])),
               dict(boxes=torch.tensor([[30., 5., 100., 70.], [0., 0., 40., 40.]]), labels=torch.tensor([2, 3]))]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = [p.detach().clone() for p in model.backbone.body.parameters()]
    losses = model.train()(IMAGES, targets)
    assert set(losses) == names and all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.body.parameters()))  # the backbone trains
    with torch.no_grad():
        detections = model.eval()(IMAGES)
    assert len(detections) == 2
    for image, found in zip(IMAGES, detections):
        assert found['boxes'].shape == (7, 4) and found['scores'].shape == found['labels'].shape == (7, )
        assert (found['boxes'][:, 2:] <= torch.tensor([image.shape[2], image.shape[1]])).all()
        assert ((found['labels'] >= 1) & (found['labels'] < 4)).all()


# -------------------------------------------------------------------------------- Hugging Face
TINY = dict(num_queries=5, d_model=64, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
            encoder_attention_heads=2, decoder_attention_heads=2, num_labels=3)
DETRS = ['Detr', 'ConditionalDetr', 'DeformableDetr']


def transformers():
    return pytest.importorskip('transformers', reason='transformers is not installed: the clients extra, outside '
                               '.[all] (mmpretrain 1.2.0 cannot be imported beside it; make test-clients runs this in '
                               '.venv-clients) and the oldest stack (transformers 5 needs torch >= 2.6)')


@pytest.mark.clients
@pytest.mark.parametrize('family', DETRS)
def test_hugging_face_detr_trains_saves_and_loads(family, tmp_path):
    hf = transformers()
    Config, Detector = getattr(hf, f'{family}Config'), getattr(hf, f'{family}ForObjectDetection')
    torch.manual_seed(0)
    config = Config(backbone_config=hf.TimmBackboneConfig(backbone='convmlp_s', out_indices=(1, 2, 3)), **TINY)
    detector = Detector(config)
    pixel_values = torch.rand(2, 3, 128, 160)
    labels = [dict(class_labels=torch.tensor([1]), boxes=torch.tensor([[0.5, 0.5, 0.4, 0.3]])),
              dict(class_labels=torch.tensor([0, 2]), boxes=torch.tensor([[0.3, 0.4, 0.2, 0.2], [0.7, 0.6, 0.3, 0.5]]))]
    output = detector(pixel_values=pixel_values, labels=labels)
    assert torch.isfinite(output.loss) and all(torch.isfinite(v) for v in output.loss_dict.values())
    output.loss.backward()
    grads = [p.grad for name, p in detector.named_parameters() if 'backbone' in name and p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)  # the loss reaches the backbone
    assert output.pred_boxes.shape == (2, 5, 4)
    assert output.logits.shape == (2, 5, 4 if family == 'Detr' else 3)  # DETR's extra class is "no object"

    detector.eval()
    detector.save_pretrained(tmp_path)
    loaded = Detector.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        ours, theirs = detector(pixel_values=pixel_values), loaded(pixel_values=pixel_values)
    assert torch.equal(ours.logits, theirs.logits) and torch.equal(ours.pred_boxes, theirs.pred_boxes)


@pytest.mark.clients
@pytest.mark.parametrize('family', DETRS)
def test_hugging_face_short_form_says_what_to_pass(family):
    """``use_timm_backbone=True, backbone='convmlp_s'`` asks timm for a fifth level: our error names
    the ``backbone_config`` that works."""
    hf = transformers()
    config = getattr(hf, f'{family}Config')(use_timm_backbone=True, backbone='convmlp_s', **TINY)
    with pytest.raises(ValueError, match=r"TimmBackboneConfig\(backbone='convmlp_s', out_indices=\(1, 2, 3\)\)"):
        getattr(hf, f'{family}ForObjectDetection')(config)
