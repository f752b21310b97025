# Transfer to Flowers-102 (mmpretrain's Flowers102, data/flowers102): the transfer recipe with
# the dataset's mean/std and cosine to 1e-8 (the official configs'); trained on 'train',
# validated on 'val' (the official 'valid'), tested on 'test'.
_base_ = './classifier_adamw-50e_transfer.py'
data_preprocessor = dict(num_classes=102, mean=[111.0015, 96.2115, 73.236], std=[75.633, 62.6025, 68.799])
model = dict(head=dict(num_classes=102))

train_dataloader = dict(dataset=dict(type='Flowers102', data_root='data/flowers102', split='train'))
val_dataloader = dict(dataset=dict(type='Flowers102', data_root='data/flowers102', split='val'))
test_dataloader = dict(dataset=dict(type='Flowers102', data_root='data/flowers102', split='test'))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 3e-4, by_epoch=True, begin=0, end=10, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-8, by_epoch=True, begin=10, end=50, T_max=40),
]
