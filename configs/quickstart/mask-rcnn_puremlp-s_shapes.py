# The Mask R-CNN quickstart with Pure-MLP-S in place of ConvMLP-S (same channels, so the same neck);
# data, schedule and recipe are the ConvMLP-S quickstart's (`make compare`).
_base_ = './mask-rcnn_convmlp-s_shapes.py'
model = dict(backbone=dict(_delete_=True, type='PureMLP', arch='s', init_cfg=None))
