"""torch.compile and torch.export with changing sizes: the backbones and the timm classifier trace
with batch, height and width symbolic (one program, one graph for all sizes), alone and inside a
detector's and a segmentor's training step."""
import pytest
import timm
import torch
from torch._dynamo.utils import counters

import convmlp_mm  # noqa: F401  (registers the models)
from convmlp_mm import ConvMLP, PureMLP
from convmlp_mm.compat import HAS_EXPORT_AUTO_DIMS, HAS_EXPORT_DIMS, HAS_IS_COMPILING
from convmlp_mm.deployment import build_model

pytestmark = pytest.mark.slow  # torch.compile and torch.export trace the models (seconds each)

needs_export_dims = pytest.mark.skipif(not HAS_EXPORT_DIMS, reason='torch.export.Dim (dynamic sizes of an '
                                       'exported program) is torch 2.2 and later')
#: torch 2.1's dynamo (the oldest stack) traces dynamic sizes into a graph per size (measured: the
#: single-graph, inductor and training-step tests below fail there); the dynamic-shape path is
#: tested from torch 2.3 on, where torch.compiler.is_compiling exists.
needs_dynamic_dynamo = pytest.mark.skipif(not HAS_IS_COMPILING, reason='dynamic sizes under torch.compile are '
                                          'one graph from torch 2.3 on; torch 2.1 and 2.2 guard on them')
#: Sizes none of the traces below is made at, odd ones included.
SIZES = [(1, 3, 97, 65), (3, 3, 33, 128), (4, 3, 161, 224)]


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def dynamic_sizes():
    """Batch 1-64, height and width 33-4096 (at 32, F4 is 1x1: torch specialises size 1)."""
    from torch.export import Dim
    return {0: Dim('batch', min=1, max=64), 2: Dim('height', min=33, max=4096), 3: Dim('width', min=33, max=4096)}


class CountingBackend:
    """A torch.compile backend that runs dynamo's graphs as they are and counts them."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


@needs_export_dims
@pytest.mark.parametrize('family', [ConvMLP, PureMLP])
def test_export_with_dynamic_batch_height_width_is_one_program_for_all_sizes(family):
    model = family('s').eval()
    program = torch.export.export(model, (torch.rand(2, 3, 64, 96), ), dynamic_shapes=(dynamic_sizes(), ))
    exported = program.module()
    with torch.no_grad():
        for size in SIZES:
            x = torch.rand(size)
            for a, b in zip(exported(x), model(x)):
                assert a.shape == b.shape and rel_err(a, b) < 1e-5, size


@pytest.mark.skipif(not HAS_EXPORT_AUTO_DIMS, reason='torch.export.Dim.AUTO is torch 2.6 and later')
def test_export_with_auto_dims_finds_batch_height_width_dynamic():
    from torch.export import Dim
    model = ConvMLP('s').eval()
    program = torch.export.export(model, (torch.rand(2, 3, 64, 96), ),
                                  dynamic_shapes=({0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}, ))
    assert len(program.range_constraints) == 3  # batch, height, width: not specialised to constants
    x = torch.rand(3, 3, 97, 65)
    with torch.no_grad():
        assert all(rel_err(a, b) < 1e-5 for a, b in zip(program.module()(x), model(x)))


@needs_export_dims
def test_timm_classifier_exports_with_dynamic_sizes():
    model = timm.create_model('convmlp_s', num_classes=10).eval()
    program = torch.export.export(model, (torch.rand(2, 3, 64, 96), ), dynamic_shapes=(dynamic_sizes(), ))
    with torch.no_grad():
        for size in SIZES:
            x = torch.rand(size)
            assert rel_err(program.module()(x), model(x)) < 1e-5, size


@needs_dynamic_dynamo
@pytest.mark.parametrize('family', [ConvMLP, PureMLP])
def test_compile_fullgraph_dynamic_is_one_graph_for_changing_sizes(family):
    torch._dynamo.reset()
    counters.clear()
    backend = CountingBackend()
    model = family('s').eval()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=backend)
    with torch.no_grad():
        for size in [(2, 3, 64, 96), (3, 3, 97, 65), (4, 3, 128, 33)]:
            x = torch.rand(size)
            assert [f.shape for f in compiled(x)] == [f.shape for f in model(x)]
    assert backend.graphs == 1 and not counters['graph_break']


@needs_dynamic_dynamo
def test_inductor_with_dynamic_sizes_gives_the_eager_numbers():
    """Inductor's kernels for symbolic sizes: a stage with the Conv-MLP block (LayerNorms, channel
    MLPs, the depthwise conv) and patch merging (odd sizes padded by symbolic amounts), at an even
    and an odd size. The whole backbone's kernels take about two minutes to build cold (one
    minute static: tests/test_performance.py)."""
    torch._dynamo.reset()
    counters.clear()
    stage = ConvMLP('table2-row4').stages[0].eval()
    compiled = torch.compile(stage, dynamic=True)
    with torch.no_grad():
        for size in [(2, 128, 16, 24), (3, 128, 13, 9)]:
            x = torch.rand(size)
            assert rel_err(compiled(x), stage(x)) < 1e-5, size
    assert counters['stats']['unique_graphs'] == 1 and not counters['graph_break']


def detection_batch(height, width):
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=2, image_shapes=[(3, height, width)] * 2, num_classes=80)


def segmentation_batch(height, width):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = [SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 150, (1, height, width))),
                             metainfo=dict(img_shape=(height, width), ori_shape=(height, width)))
               for _ in range(2)]
    return dict(inputs=[torch.randint(0, 256, (3, height, width), dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)


@needs_dynamic_dynamo
@pytest.mark.parametrize('config, batch', [
    ('configs/retinanet/retinanet_convmlp-s_fpn_1x_coco.py', detection_batch),
    ('configs/sem_fpn/fpn_convmlp-s_8xb2-40k_ade20k-512x512.py', segmentation_batch)])
def test_backbone_is_one_graph_in_a_training_step_with_changing_sizes(config, batch):
    """mmengine's Runner compiles ``model.train_step`` (``compile=True`` or a dict of
    torch.compile's options); here the backbone alone is compiled inside it, with fullgraph=True
    (a graph break in it raises) and dynamic=True: one graph for three image sizes."""
    from mmengine.optim import OptimWrapper
    torch._dynamo.reset()
    counters.clear()
    model, _ = build_model(config)
    if hasattr(model.data_preprocessor, 'size'):  # mmseg's pads every image to the crop size: keep theirs
        model.data_preprocessor.size, model.data_preprocessor.size_divisor = None, 32
    backend = CountingBackend()
    model.backbone.forward = torch.compile(model.backbone.forward, fullgraph=True, dynamic=True, backend=backend)
    model.train()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-4))
    for height, width in [(96, 128), (128, 64), (160, 96)]:
        losses = model.train_step(batch(height, width), optim_wrapper)
        assert all(torch.isfinite(v) for v in losses.values())
    assert backend.graphs == 1 and not counters['graph_break']
