# ConvMLP-L transferred to cifar100 from the published ImageNet weights: Table 4 reports 88.6 % top-1.
_base_ = './cifar100_transfer.py'
model = dict(
    backbone=dict(arch='l', init_cfg=dict(
        checkpoint='https://shi-labs.com/projects/convmlp/checkpoints/convmlp_l_imagenet.pth')),
    head=dict(in_channels=768))
train_dataloader = dict(batch_size=64)
auto_scale_lr = dict(base_batch_size=512)  # the lr above is for 8 GPUs x 64 images
