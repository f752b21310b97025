# The paper's transfer recipe (Sec. 4.4, Table 4), as the official repository's fine-tuning
# configs give it: from the published ImageNet weights, 50 epochs at 224x224 plus 10 cool-down
# epochs; AdamW lr 3e-4, weight decay 0.05; 10 linear warm-up epochs from 1e-6, cosine to 1e-5;
# label smoothing 0.1; the ImageNet augmentations with crop scale 0.8-1.0 and crop_pct 1.0
# (resize 224, center crop 224); no EMA; 128 images per GPU. The dataset recipes
# (cifar10_transfer.py, cifar100_transfer.py, flowers102_transfer.py) inherit it.
# The paper does not say how many GPUs; the names say 8 (the ImageNet runs'), and
# `tools/train.py --auto-scale-lr` scales lr linearly from 8 GPUs x 128 images.
_base_ = './classifier_adamw-300e_in1k.py'
custom_hooks = [dict(type='SafeCheckpointLoadHook'), dict(type='RandomStateHook'), dict(type='FiniteLossHook')]

model = dict(backbone=dict(init_cfg=dict(
    type='Pretrained', checkpoint='https://shi-labs.com/projects/convmlp/checkpoints/convmlp_s_imagenet.pth')))

crop_pct = 1.0
train_pipeline = [  # the ImageNet recipe's, with crop scale 0.8-1.0
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, crop_ratio_range=(0.8, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10, magnitude_level=9,
         magnitude_std=0.5, hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02, max_area_ratio=1 / 3,
         fill_color=[103.53, 116.28, 123.675], fill_std=[57.375, 57.12, 58.395]),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=int(224 / crop_pct), edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

lr, min_lr, warmup_lr = 3e-4, 1e-5, 1e-6
warmup_epochs, epochs, cooldown_epochs = 10, 50, 10
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=warmup_lr / lr, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=min_lr, by_epoch=True, begin=warmup_epochs, end=epochs,
         T_max=epochs - warmup_epochs),
]
train_cfg = dict(max_epochs=epochs + cooldown_epochs, val_interval=5)
auto_scale_lr = dict(base_batch_size=1024)
