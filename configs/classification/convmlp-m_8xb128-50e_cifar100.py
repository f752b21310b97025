# ConvMLP-M transferred to cifar100 from the published ImageNet weights: Table 4 reports 89.1 % top-1.
_base_ = './cifar100_transfer.py'
model = dict(
    backbone=dict(arch='m', init_cfg=dict(
        checkpoint='https://shi-labs.com/projects/convmlp/checkpoints/convmlp_m_imagenet.pth')),
    head=dict(in_channels=512))
train_dataloader = dict(batch_size=128)
