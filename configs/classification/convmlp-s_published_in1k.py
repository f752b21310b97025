# Evaluates the published ConvMLP-S ImageNet-1k checkpoint (Table 3: 76.8 % top-1) with the
# recipe's evaluation (resize 248 bicubic, center crop 224). Convert it to our classifier first:
#   python tools/convert_checkpoint.py \
#       https://shi-labs.com/projects/convmlp/checkpoints/convmlp_s_imagenet.pth checkpoints/convmlp_s_in1k.pth
#   python tools/test.py configs/classification/convmlp-s_published_in1k.py checkpoints/convmlp_s_in1k.pth
_base_ = './convmlp-s_8xb128-300e_in1k.py'
paper_top1 = 76.8
load_from = 'checkpoints/convmlp_s_in1k.pth'
custom_hooks = [dict(type='SafeCheckpointLoadHook')]  # nothing to train: no EMA copy of the published weights
