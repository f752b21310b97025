# The recipe of Table 2's 100-epoch ablations (Sec. 4.1): the ImageNet recipe with 100 epochs
# (plus its 10 cool-down epochs), 4 GPUs x 256 images and lr 1e-3 for that global batch of 1024.
_base_ = './classifier_adamw-300e_in1k.py'

lr, min_lr, warmup_lr = 1e-3, 1e-5, 1e-6
warmup_epochs, epochs, cooldown_epochs = 5, 100, 10
train_dataloader = dict(batch_size=256)
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=warmup_lr / lr, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=min_lr, by_epoch=True, begin=warmup_epochs, end=epochs,
         T_max=epochs - warmup_epochs),
]
train_cfg = dict(max_epochs=epochs + cooldown_epochs)
