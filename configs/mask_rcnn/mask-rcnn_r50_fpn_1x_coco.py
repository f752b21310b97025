_base_ = './mask-rcnn_adamw_1x_coco.py'
# mmdet's ResNet-50 (frozen_stages=1, norm_eval=True), trained with the same recipe.
model = dict(
    backbone=dict(depth=50, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
