_base_ = './mask-rcnn_adamw_1x_coco.py'
# Pure-MLP has no published ImageNet weights: train them first with the ImageNet recipe,
#   tools/train.py configs/classification/puremlp-m_8xb128-300e_in1k.py
# whose last checkpoint (epoch 300 + 10 cool-down) this init_cfg reads; or set init_cfg=None to
# train the detector from scratch.
model = dict(
    backbone=dict(_delete_=True, type='PureMLP', arch='m',
                  init_cfg=dict(type='Pretrained', checkpoint='work_dirs/puremlp-m_8xb128-300e_in1k/epoch_310.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
