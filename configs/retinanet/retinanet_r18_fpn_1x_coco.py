_base_ = './retinanet_adamw_1x_coco.py'
# mmdet's ResNet-18 (frozen_stages=1, norm_eval=True), trained with the same recipe.
model = dict(
    backbone=dict(depth=18, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    neck=dict(in_channels=[64, 128, 256, 512]))
