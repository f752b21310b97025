# Transfer to CIFAR-10 (mmpretrain's CIFAR10, data/cifar10): the transfer recipe with the
# dataset's mean/std (the official configs') and its 32x32 images resized to 224.
# Training interpolation: bicubic (timm's 'random' picks bilinear or bicubic per image).
_base_ = './classifier_adamw-50e_transfer.py'
data_preprocessor = dict(num_classes=10, mean=[125.307, 122.961, 113.8575], std=[62.985, 62.0925, 66.708],
                         to_rgb=False)  # CIFAR arrays are RGB already
model = dict(head=dict(num_classes=10))

train_pipeline = [  # the recipe's augmentations; CIFAR arrays need no LoadImageFromFile
    dict(type='RandomResizedCrop', scale=224, crop_ratio_range=(0.8, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10, magnitude_level=9,
         magnitude_std=0.5, hparams=dict(pad_val=[125, 123, 114], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02, max_area_ratio=1 / 3,
         fill_color=[125.307, 122.961, 113.8575], fill_std=[62.985, 62.0925, 66.708]),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='ResizeEdge', scale=224, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(type='CIFAR10', data_root='data/cifar10', split='train', download=False,
                                     pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(type='CIFAR10', data_root='data/cifar10', split='test', download=False,
                                   pipeline=test_pipeline))
test_dataloader = val_dataloader
