#!/usr/bin/env bash
# tools/gpu_check.sh [WORK_DIR]
# The GPU path, end to end, on a machine with one CUDA GPU (at most about 8 minutes): the
# backbones' forward and backward in fp32, fp16 and bf16; one AMP training iteration of each
# quickstart config through tools/train.py --amp and its test through tools/test.py --amp; a
# 1-GPU tools/dist_train.sh with SyncBN; tools/benchmark.py --device cuda --quick, written to
# docs/benchmark-gpu.json. Stops with a non-zero exit at the first failure; prints each step
# that passed. Run from the repository root, in the environment of `make env`.
[[ "${1:-}" == -h || "${1:-}" == --help ]] && { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0; }
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/python.sh
WORK=${1:-work_dirs/gpu_check}
mkdir -p "$WORK"
step() { echo "== $1"; shift; "$@" > "$WORK/step.log" 2>&1 || { tail -40 "$WORK/step.log"; echo "FAILED: $*"; exit 1; }; echo "passed"; }

step "CUDA is there" "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name())"
step "backbones: forward and backward in fp32, fp16, bf16" "$PYTHON" -c "
import torch, convmlp_mm
for family in (convmlp_mm.ConvMLP, convmlp_mm.PureMLP):
    model = family('s').cuda().train()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        with torch.autocast('cuda', dtype=dtype, enabled=dtype != torch.float32):
            out = model(torch.rand(2, 3, 224, 224, device='cuda'))
        loss = sum(o.float().mean() for o in out)
        loss.backward()
        assert torch.isfinite(loss), (family.__name__, dtype)
"
step "generated data" "$PYTHON" tools/make_shapes.py
step "generated classification data" "$PYTHON" tools/make_shapes.py --classification
SHORT_EPOCHS=(train_cfg.max_epochs=1 train_dataloader.batch_size=2 train_cfg.val_interval=1)
for config in mask-rcnn_convmlp-s_shapes retinanet_convmlp-s_shapes convmlp-s_shapes-cls; do
    step "$config: one AMP training epoch (tools/train.py --amp)" "$PYTHON" tools/train.py \
        "configs/quickstart/$config.py" --amp --work-dir "$WORK/$config" --cfg-options "${SHORT_EPOCHS[@]}"
    step "$config: tools/test.py --amp" "$PYTHON" tools/test.py "configs/quickstart/$config.py" \
        "$(cat "$WORK/$config/last_checkpoint")" --amp --work-dir "$WORK/$config"
done
step "fpn_convmlp-s_shapes: AMP training (tools/train.py --amp)" "$PYTHON" tools/train.py \
    configs/quickstart/fpn_convmlp-s_shapes.py --amp --work-dir "$WORK/fpn" \
    --cfg-options train_cfg.max_iters=2 train_cfg.val_interval=2 default_hooks.checkpoint.interval=2
step "fpn_convmlp-s_shapes: tools/test.py --amp" "$PYTHON" tools/test.py configs/quickstart/fpn_convmlp-s_shapes.py \
    "$(cat "$WORK/fpn/last_checkpoint")" --amp --work-dir "$WORK/fpn"
step "tools/dist_train.sh on 1 GPU with SyncBN" env PORT=29533 tools/dist_train.sh \
    configs/quickstart/fpn_convmlp-s_shapes.py 1 --work-dir "$WORK/syncbn" --cfg-options train_cfg.max_iters=2 \
    train_cfg.val_interval=2 default_hooks.checkpoint.interval=2 "model.backbone.norm_cfg.type=SyncBN"
step "tools/benchmark.py --device cuda --quick" "$PYTHON" tools/benchmark.py --device cuda --quick \
    --out docs/benchmark-gpu.json
echo "all steps passed; the GPU table: docs/benchmark-gpu.json"
