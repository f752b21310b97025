"""Faults and bad input: killed jobs resume exactly, checkpoints are complete or absent, bad
checkpoints and inputs stop with one clear message, a failing rank stops the job, non-finite
losses never reach the weights, and AMP stays finite."""
import json
import io
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from mmengine.fileio import get_file_backend
from PIL import Image

import convmlp_mm.mm
from convmlp_mm import ConvMLP, MLPClassifier, PureMLP
from convmlp_mm.engine.checkpoint import CheckpointError
from convmlp_mm.compat import CPU_AUTOCAST_DTYPES
from convmlp_mm.data import generate
from convmlp_mm.cli import find_resume_checkpoint

import tool_runner
from toy import experiment_name

pytestmark = pytest.mark.slow  # trainings and tools in subprocesses

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN, TEST, INFER = (osp.join(ROOT, 'tools', name) for name in ('train.py', 'test.py', 'infer.py'))
FPN = osp.join(ROOT, 'configs/quickstart/fpn_convmlp-s_shapes.py')
MASK_RCNN = osp.join(ROOT, 'configs/quickstart/mask-rcnn_convmlp-s_shapes.py')
NO_VAL = ['val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
          'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']


def tool(args, cwd, env=None, timeout=900):
    env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
    return tool_runner.run([sys.executable, *args], cwd, env, timeout)


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    cwd = tmp_path_factory.mktemp('reliability')
    generate(str(cwd / 'data/shapes'), num_train=8, num_val=2, size=(64, 80), seed=2)
    return cwd


# ------------------------------------------------------------------------------- kill and resume
def state_of(path):
    checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    return checkpoint['state_dict'], checkpoint['optimizer'], checkpoint['meta']


@pytest.mark.stack_independent('the bit-identical resume on torch 2.1 is test_cluster\'s SIGTERM case; atomic writes '
                               'are tested on both')
def test_sigkill_then_resume_equals_an_uninterrupted_run(shapes):
    """Deterministic CPU mode: the weights after 8 iterations are bit-identical whether or not the
    run was killed (SIGKILL, with its data workers) after its iteration-4 checkpoint."""
    options = ['--cfg-options', 'train_cfg.max_iters=8', 'train_cfg.val_interval=100',
               'default_hooks.checkpoint.interval=4', 'default_hooks.checkpoint.max_keep_ckpts=-1',
               'train_dataloader.batch_size=2', 'train_dataloader.num_workers=1',
               'randomness.seed=3', 'randomness.deterministic=True', *NO_VAL]
    whole, parts = shapes / 'whole', shapes / 'killed'
    ok(tool([TRAIN, FPN, '--work-dir', whole, *options], shapes))

    env = dict(os.environ, PYTHONUNBUFFERED='1')
    proc = subprocess.Popen([sys.executable, TRAIN, FPN, '--work-dir', str(parts), *options], cwd=shapes, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 600
        while not str(find_resume_checkpoint(str(parts))).endswith('iter_4.pth'):
            assert proc.poll() is None and time.time() < deadline, 'the run ended before its first checkpoint'
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not osp.exists(parts / 'iter_8.pth')

    out = ok(tool([TRAIN, FPN, '--work-dir', parts, '--resume', *options], shapes))
    assert 'resumed' in out.lower() and 'iter_4.pth' in out
    weights, optimizer, meta = state_of(parts / 'iter_8.pth')
    ref_weights, ref_optimizer, ref_meta = state_of(whole / 'iter_8.pth')
    assert meta['iter'] == ref_meta['iter'] == 8
    assert weights.keys() == ref_weights.keys()
    different = [k for k in weights if not torch.equal(weights[k], ref_weights[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:3]}'
    for a, b in zip(optimizer['state'].values(), ref_optimizer['state'].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.stack_independent('the seed a resumed loader is built with is mmengine\'s and ours, the same on both '
                               'stacks; the bit-identical resume on torch 2.1 is test_cluster\'s SIGTERM case')
def test_iteration_based_run_without_a_seed_resumes_bit_identical_from_a_mid_pass_checkpoint(shapes):
    """Semantic FPN as the ADE20K configs run it: ResumableIterBasedTrainLoop, an InfiniteSampler,
    two persistent data workers flipping images at random, drop path, and no configured seed (each
    run draws one). A second run, in a new interpreter as a user's, resumed from the first run's
    iteration-3 checkpoint (in the middle of a pass over the 8 images, 64x80) ends with the first
    run's weights and optimizer state after 6 iterations."""
    options = ['--no-validate', '--cfg-options', 'train_cfg.max_iters=6', 'default_hooks.checkpoint.interval=3',
               'default_hooks.checkpoint.max_keep_ckpts=-1', 'model.data_preprocessor.size=(64,80)',
               'train_dataloader.batch_size=2', 'train_dataloader.num_workers=2',
               'train_dataloader.persistent_workers=True', 'randomness.seed=None']
    whole, resumed = shapes / 'whole-no-seed', shapes / 'resumed-no-seed'
    out = ok(tool([TRAIN, FPN, '--work-dir', whole, *options], shapes))
    assert 'ResumableIterBasedTrainLoop' in out and "type='InfiniteSampler'" in out
    # a new interpreter: a fork of the tools' zygote would draw the seed the first run drew
    command = [sys.executable, TRAIN, FPN, '--work-dir', str(resumed), '--resume', str(whole / 'iter_3.pth'), *options]
    out = ok(subprocess.run(command, cwd=shapes, capture_output=True, text=True, timeout=600))
    weights, optimizer, meta = state_of(resumed / 'iter_6.pth')
    ref_weights, ref_optimizer, ref_meta = state_of(whole / 'iter_6.pth')
    assert int(re.search(r'\n\s+seed: (\d+)\n', out).group(1)) != ref_meta['seed']  # the resumed run drew its own
    assert meta['iter'] == ref_meta['iter'] == 6 and meta['seed'] == ref_meta['seed']
    different = [k for k in weights if not torch.equal(weights[k], ref_weights[k])]
    assert weights.keys() == ref_weights.keys() and not different, f'{len(different)} tensors differ: {different[:3]}'
    for a, b in zip(optimizer['state'].values(), ref_optimizer['state'].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert 'the training data loader, built with seed' in out


def test_kill_while_writing_keeps_the_previous_checkpoint(tmp_path):
    """SIGKILL after the bytes are written but before the rename: the destination keeps its old
    content. A last_checkpoint pointer left empty by a kill, or naming a file never written, falls
    back to the newest complete checkpoint."""
    target = tmp_path / 'iter_8.pth'
    old = io.BytesIO()
    torch.save(dict(state_dict={}, optimizer={}, message_hub={}), old)  # what a resume reads
    target.write_bytes(old.getvalue())
    script = textwrap.dedent(f'''
        import os, time
        import convmlp_mm
        from mmengine.fileio import get_file_backend
        os.fsync = lambda fd: (print('written', flush=True), time.sleep(600))
        backend = get_file_backend({str(target)!r}, backend_args=dict(backend='atomic_local'))  # as CheckpointHook
        backend.put(b'new' * 1000000, {str(target)!r})
    ''')
    proc = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'written'
    proc.kill()
    proc.wait()
    assert target.read_bytes() == old.getvalue()

    (tmp_path / 'iter_4.pth').write_bytes(old.getvalue())
    (tmp_path / 'last_checkpoint').write_text('')  # a pointer truncated by a kill
    assert find_resume_checkpoint(str(tmp_path)) in (str(tmp_path / 'iter_4.pth'), str(target))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_12.pth'))  # names a file never written
    os.utime(tmp_path / 'iter_4.pth', (0, 0))
    assert find_resume_checkpoint(str(tmp_path)) == str(target)


def test_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / 'epoch_3.pth'
    target.write_bytes(b'old')

    def full(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', full)
    with pytest.raises(OSError, match='No space left'):
        get_file_backend(str(target), backend_args=dict(backend='atomic_local')).put(b'new', str(target))
    assert target.read_bytes() == b'old' and os.listdir(tmp_path) == ['epoch_3.pth']


def test_resume_with_nothing_to_resume_starts_from_scratch(shapes):
    out = ok(tool([TRAIN, FPN, '--work-dir', shapes / 'fresh', '--resume', '--cfg-options', 'train_cfg.max_iters=1',
                   'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
                   'train_dataloader.persistent_workers=False', 'train_cfg.val_interval=100', *NO_VAL], shapes))
    assert 'no checkpoint in' in out and osp.isfile(shapes / 'fresh/iter_1.pth')


# ------------------------------------------------------------------------------------ checkpoints
def init_error(family, arch, checkpoint) -> str:
    """The CheckpointError message of ``family(arch)`` initialised from ``checkpoint``."""
    model = getattr(convmlp_mm.mm, family.__name__)(arch, init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    with pytest.raises(CheckpointError) as error:
        model.init_weights()
    return str(error.value)


def test_truncated_or_corrupt_checkpoint_names_file_and_cause(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save(ConvMLP('s').state_dict(), good)
    truncated, corrupt = tmp_path / 'truncated.pth', tmp_path / 'corrupt.pth'
    truncated.write_bytes(good.read_bytes()[:100000])
    corrupt.write_bytes(np.random.RandomState(0).bytes(5000))
    for path in (truncated, corrupt):
        message = init_error(ConvMLP, 's', path)
        assert str(path) in message and 'truncated or corrupt' in message and 'expected a complete file' in message


def test_small_checkpoint_into_medium_names_keys_and_both_shapes(tmp_path):
    path = tmp_path / 'convmlp_s.pth'
    torch.save(ConvMLP('s').state_dict(), path)
    message = init_error(ConvMLP, 'm', path)
    assert str(path) in message and '(arch m)' in message
    assert 'stages.1.blocks.1.channel_mlp1.fc1.bias: checkpoint (512,) vs model (768,)' in message
    assert 'missing keys' in message  # M is deeper


def test_classification_checkpoint_of_another_layout(tmp_path):
    from mmpretrain.models import ResNet
    path = tmp_path / 'resnet_classifier.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in ResNet(18).state_dict().items()}), path)
    message = init_error(PureMLP, 's', path)
    assert str(path) in message and 'none of its keys is a PureMLP key' in message
    assert 'expected a published PureMLP classification checkpoint' in message
    torch.save([1, 2, 3], path)
    assert 'holds no state dict' in init_error(PureMLP, 's', path)


def test_unreachable_url_names_the_url():
    url = 'http://127.0.0.1:9/convmlp_s_imagenet.pth'  # the discard port: connection refused
    message = init_error(ConvMLP, 's', url)
    assert url in message and 'cannot download it' in message and 'download the file yourself' in message


def test_train_and_test_tools_report_a_corrupt_checkpoint_in_one_line(shapes):
    corrupt = shapes / 'corrupt.pth'
    corrupt.write_bytes(b'PK\x03\x04 not really a zip file')
    for args in ([TRAIN, FPN, '--work-dir', shapes / 'corrupt_train', '--resume', corrupt],
                 [TEST, FPN, corrupt, '--work-dir', shapes / 'corrupt_test']):
        proc = tool(args, shapes)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 1 and last.startswith('error: cannot load checkpoint') and str(corrupt) in last


def test_resuming_another_model_names_keys_and_shapes(shapes):
    other = shapes / 'other_model.pth'
    torch.save(dict(state_dict={'backbone.tokenizer.block.0.weight': torch.zeros(48, 3, 3, 3)}, meta=dict(iter=4)),
               other)
    proc = tool([TRAIN, FPN, '--work-dir', shapes / 'other', '--resume', other], shapes)
    assert proc.returncode == 1 and f"error: checkpoint '{other}' does not fit EncoderDecoder" in proc.stderr
    assert 'backbone.tokenizer.block.0.weight: checkpoint (48, 3, 3, 3) vs model (32, 3, 3, 3)' in proc.stderr
    assert 'missing keys' in proc.stderr


# ------------------------------------------------------------------------------------ distributed
FAILING_HOOK = '''
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class FailOnRankOne(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if get_rank() == 1 and runner.iter == 1:
            raise RuntimeError('rank 1 fails on purpose')
'''


def test_a_failing_rank_stops_every_rank(shapes):
    (shapes / 'failing_hook.py').write_text(FAILING_HOOK)
    config = shapes / 'failing_rank.py'
    config.write_text(f"_base_ = {FPN!r}\n"
                      "custom_imports = dict(imports=['convmlp_mm', 'failing_hook'], allow_failed_imports=False)\n"
                      "custom_hooks = [dict(type='FiniteLossHook'), dict(type='FailOnRankOne')]\n")
    env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONPATH=str(shapes), PORT=str(tool_runner.free_port()),
               VIRTUAL_ENV=sys.prefix)  # dist_train.sh runs this suite's environment
    start = time.time()
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools/dist_train.sh'), str(config), '2', '--work-dir', str(shapes / 'failing'),
         '--cfg-options', 'train_cfg.max_iters=20', 'train_dataloader.batch_size=1', 'train_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False', *NO_VAL],
        cwd=shapes, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.time() - start
    assert proc.returncode != 0 and 'rank 1 fails on purpose' in proc.stdout + proc.stderr
    assert elapsed < 120, f'took {elapsed:.0f} s'
    assert not osp.exists(shapes / 'failing/iter_20.pth')


# --------------------------------------------------------------------------------------- numerics
def test_non_finite_loss_stops_before_the_step_naming_the_iteration(shapes):
    """std=0 in the data preprocessor makes the input, and so the loss, non-finite."""
    work_dir = shapes / 'nan'
    proc = tool([TRAIN, FPN, '--work-dir', work_dir, '--cfg-options', 'train_cfg.max_iters=3',
                 'model.data_preprocessor.std=[0,0,0]', 'train_dataloader.batch_size=2',
                 'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False', *NO_VAL], shapes)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and last.startswith('error: non-finite loss at iteration 1 (on this rank: ')
    assert not [f for f in os.listdir(work_dir) if f.endswith('.pth')]


def test_non_finite_loss_is_skipped_when_configured(tmp_path):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1)
            self.calls = 0

        def forward(self, inputs, data_samples=None, mode='loss'):
            self.calls += 1
            loss = self.fc(torch.stack(inputs)).square().mean()
            return dict(loss=loss * float('nan') if self.calls == 2 else loss)

    dataset = [dict(inputs=torch.ones(2), data_samples=None)] * 4
    runner = Runner(model=Toy(), experiment_name=experiment_name(), work_dir=str(tmp_path), train_dataloader=dict(
        dataset=dataset, sampler=dict(type='DefaultSampler', shuffle=False), batch_size=1,
        collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), train_cfg=dict(by_epoch=True, max_epochs=1),
        custom_hooks=[dict(type='FiniteLossHook', action='skip')], default_hooks=dict(checkpoint=None),
        default_scope='mmengine')
    runner.train()
    (hook, ) = [h for h in runner.hooks if type(h).__name__ == 'FiniteLossHook']
    assert hook.skipped == 1 and all(torch.isfinite(p).all() for p in runner.model.parameters())


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('family', ['ConvMLP', 'PureMLP'])
def test_amp_keeps_layernorm_and_softmax_in_float32_and_finite(family, dtype):
    if dtype not in CPU_AUTOCAST_DTYPES:
        pytest.skip(f'CPU autocast on torch {torch.__version__} does not take {dtype} (it does since torch 2.2)')
    model = MLPClassifier(family, 's', num_classes=10).eval()
    norm_dtypes = []
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.register_forward_hook(lambda m, i, o: norm_dtypes.append(o.dtype))
    x = torch.randn(2, 3, 96, 128) * 3
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
        feats = model.backbone(x)
        logits = model(x)
        probs = torch.softmax(logits, dim=1)
    assert len(norm_dtypes) > 10 and set(norm_dtypes) == {torch.float32}
    assert logits.dtype == probs.dtype == torch.float32
    assert all(torch.isfinite(f).all() for f in feats) and torch.isfinite(probs).all()
    with torch.no_grad():
        reference = torch.softmax(model(x), dim=1)
    assert (probs - reference).abs().max() < 0.05


# ----------------------------------------------------------------------------------------- inputs
def write_coco(root, images):
    """A COCO set of (name, size, mode, boxes) images; empty boxes make an empty-annotation image."""
    os.makedirs(root / 'images', exist_ok=True)
    coco = dict(images=[], annotations=[], categories=[dict(id=i + 1, name=n) for i, n in
                                                       enumerate(('rectangle', 'ellipse', 'triangle'))])
    for index, (name, (w, h), mode, boxes) in enumerate(images):
        array = (np.random.RandomState(index).rand(h, w, 4) * 255).astype(np.uint8)
        Image.fromarray(array, 'RGBA').convert(mode).save(root / 'images' / name)
        coco['images'].append(dict(id=index, file_name=name, width=w, height=h))
        for x, y, bw, bh in boxes:
            coco['annotations'].append(dict(
                id=len(coco['annotations']) + 1, image_id=index, category_id=1, bbox=[x, y, bw, bh], area=bw * bh,
                iscrowd=0, segmentation=[[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]))
    (root / 'ann.json').write_text(json.dumps(coco))


def coco_options(root, batch_size=2):
    dataset = ['data_root=' + str(root), 'ann_file=ann.json', 'data_prefix.img=images/']
    return [*[f'{split}_dataloader.dataset.{d}' for split in ('train', 'val', 'test') for d in dataset],
            'train_dataloader.dataset.filter_cfg.filter_empty_gt=False', f'train_dataloader.batch_size={batch_size}',
            'val_evaluator.ann_file=' + str(root / 'ann.json'), 'test_evaluator.ann_file=' + str(root / 'ann.json'),
            *[f'{split}_dataloader.{k}' for split in ('train', 'val', 'test')
              for k in ('num_workers=0', 'persistent_workers=False')]]


@pytest.mark.stack_independent('image decoding and pipelines (mmcv, mmdet) are the same on both stacks; odd sizes '
                               'through the backbones run on both')
def test_any_size_grayscale_rgba_and_empty_images_train_test_and_infer(tmp_path):
    root = tmp_path / 'odd'
    write_coco(root, [('tiny.png', (32, 32), 'RGB', [(4, 4, 20, 16)]),
                      ('huge_gray.png', (4000, 4000), 'L', [(500, 800, 2000, 1500)]),
                      ('rgba_empty.png', (61, 47), 'RGBA', []),
                      ('wide_empty.jpg', (211, 37), 'RGB', [])])
    work_dir = tmp_path / 'work'
    # ten detections an image: each mask is still pasted, encoded and drawn at 4000x4000 (the
    # untrained model's hundred cost a minute); test.py evaluates, so training does not
    few = 'model.test_cfg.rcnn.max_per_img=10'
    ok(tool([TRAIN, MASK_RCNN, '--work-dir', work_dir, '--cfg-options', 'train_cfg.max_epochs=1',
             'train_cfg.val_interval=2', *coco_options(root)], tmp_path))
    checkpoint = work_dir / 'epoch_1.pth'
    out = ok(tool([TEST, MASK_RCNN, checkpoint, '--work-dir', work_dir, '--cfg-options', *coco_options(root), few],
                  tmp_path))
    assert 'bbox_mAP' in out and 'segm_mAP' in out
    images = [root / 'images' / name for name in ('tiny.png', 'huge_gray.png', 'rgba_empty.png')]
    out = ok(tool([INFER, MASK_RCNN, checkpoint, *images, '--out-dir', tmp_path / 'pictures', '--cfg-options', few],
                  tmp_path))
    assert len([line for line in out.splitlines() if line.endswith('.png')]) == 3


def test_backbone_takes_32_to_4000_pixels():
    model = ConvMLP('s').eval()
    with torch.no_grad():
        assert [f.shape[-1] for f in model(torch.rand(1, 3, 32, 32))] == [8, 4, 2, 1]
        assert [f.shape[-1] for f in model(torch.rand(1, 3, 4000, 4000))] == [1000, 500, 250, 125]


def test_too_small_or_malformed_images_are_named(tmp_path):
    root = tmp_path / 'small'
    write_coco(root, [('ok.png', (64, 64), 'RGB', [(4, 4, 20, 16)]), ('small.png', (20, 31), 'RGB', [(1, 1, 5, 5)])])
    proc = tool([TRAIN, MASK_RCNN, '--work-dir', tmp_path / 'work', '--cfg-options', *coco_options(root)], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (f'error: {root / "images/small.png"}: the image is 20x31 pixels; '
                                                    'images must be at least 32x32')
    (root / 'images/small.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    checkpoint = tmp_path / 'any.pth'
    checkpoint.write_bytes(b'')
    proc = tool([INFER, MASK_RCNN, checkpoint, root / 'images/small.png'], tmp_path)
    assert proc.returncode == 2 and 'small.png: not a readable image' in proc.stderr
