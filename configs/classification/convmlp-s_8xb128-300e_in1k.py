_base_ = './classifier_adamw-300e_in1k.py'
model = dict(backbone=dict(arch='s'), head=dict(in_channels=512))
