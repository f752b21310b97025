# Transfer to CIFAR-100 (mmpretrain's CIFAR100, data/cifar100): as CIFAR-10, with this dataset's
# mean/std (the official configs').
_base_ = './cifar10_transfer.py'
data_preprocessor = dict(num_classes=100, mean=[129.3105, 124.1085, 112.404], std=[68.2125, 65.4075, 70.4055])
model = dict(head=dict(num_classes=100))
train_dataloader = dict(dataset=dict(type='CIFAR100', data_root='data/cifar100'))
val_dataloader = dict(dataset=dict(type='CIFAR100', data_root='data/cifar100'))
test_dataloader = val_dataloader
