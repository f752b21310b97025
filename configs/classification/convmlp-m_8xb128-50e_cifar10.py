# ConvMLP-M transferred to cifar10 from the published ImageNet weights: Table 4 reports 98.6 % top-1.
_base_ = './cifar10_transfer.py'
model = dict(
    backbone=dict(arch='m', init_cfg=dict(
        checkpoint='https://shi-labs.com/projects/convmlp/checkpoints/convmlp_m_imagenet.pth')),
    head=dict(in_channels=512))
train_dataloader = dict(batch_size=128)
