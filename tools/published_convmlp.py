"""The published ConvMLP classifier, restated straightforwardly: the reference against which
:class:`~convmlp_mm.models.convmlp.ConvMLP` is tested (same F1-F4, logits and gradients) and
timed (``tools/benchmark.py``). Not for use in configs.

It is the published layout: the published module names, Linear MLPs on NHWC tensors, a
permute pair around every depthwise conv and downsample, NCHW convolutions, eval-mode only
(no drop path). ``forward_taps`` returns F1-F4 where the published detection and segmentation
models tap them. Plain torch only, on purpose: it shares no code with the model it checks.
"""
import torch
import torch.nn as nn

ARCHS = {
    's': dict(blocks=(2, 4, 2), dims=(128, 256, 512), ratio=2, channels=64, conv_blocks=2),
    'm': dict(blocks=(3, 6, 3), dims=(128, 256, 512), ratio=3, channels=64, conv_blocks=3),
    'l': dict(blocks=(4, 8, 3), dims=(192, 384, 768), ratio=3, channels=96, conv_blocks=3),
}


def _cbr(cin, cout, k, s=1):
    return [nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Tokenizer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block = nn.Sequential(*_cbr(3, c // 2, 3, 2), *_cbr(c // 2, c // 2, 3), *_cbr(c // 2, c, 3),
                                   nn.MaxPool2d(3, 2, 1))

    def forward(self, x):
        return self.block(x)


class ConvStage(nn.Module):
    def __init__(self, n, c, hidden, out):
        super().__init__()
        self.conv_blocks = nn.ModuleList(
            [nn.Sequential(*_cbr(c, hidden, 1), *_cbr(hidden, hidden, 3), *_cbr(hidden, c, 1)) for _ in range(n)])
        self.downsample = nn.Conv2d(c, out, 3, 2, 1)

    def forward(self, x):
        for block in self.conv_blocks:
            x = x + block(x)
        return self.downsample(x)


class Mlp(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(c, hidden), nn.GELU(), nn.Linear(hidden, c)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(c)
        self.channel_mlp1 = Mlp(c, hidden)
        self.norm2 = nn.LayerNorm(c)
        self.connect = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        self.connect_norm = nn.LayerNorm(c)
        self.channel_mlp2 = Mlp(c, hidden)

    def forward(self, x):  # eval only: no drop path
        x = x + self.channel_mlp1(self.norm1(x))
        x = self.connect(self.connect_norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.channel_mlp2(self.norm2(x))


class Down(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.downsample = nn.Conv2d(cin, cout, 3, 2, 1)

    def forward(self, x):
        return self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class Stage(nn.Module):
    def __init__(self, n, c, hidden, out):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(c, hidden) for _ in range(n)])
        self.downsample_mlp = Down(c, out) if out else nn.Identity()

    def forward(self, x):
        return self.downsample_mlp(self.blocks(x))


class PublishedConvMLP(nn.Module):
    def __init__(self, arch='s', num_classes=1000):
        super().__init__()
        a = ARCHS[arch]
        dims = a['dims']
        self.tokenizer = Tokenizer(a['channels'])
        self.conv_stages = ConvStage(a['conv_blocks'], a['channels'], dims[0], dims[0])
        self.stages = nn.ModuleList([Stage(n, dims[i], int(dims[i] * a['ratio']), dims[i + 1] if i < 2 else None)
                                     for i, n in enumerate(a['blocks'])])
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward_taps(self, x):
        f1 = self.tokenizer(x)
        f2 = self.conv_stages(f1)
        x = self.stages[0](f2.permute(0, 2, 3, 1))
        f3 = x.permute(0, 3, 1, 2)
        x = self.stages[2](self.stages[1](x))
        return [f1, f2, f3, x.permute(0, 3, 1, 2)], x

    def forward(self, x):
        x = self.forward_taps(x)[1]
        n, _, _, c = x.shape
        return self.head(self.norm(x.reshape(n, -1, c)).mean(dim=1))


def randomised(arch: str = 's', seed: int = 0) -> PublishedConvMLP:
    """A published-layout model in eval mode with random weights and BN statistics."""
    torch.manual_seed(seed)
    model = PublishedConvMLP(arch)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                if 'running_var' in name:
                    tensor.uniform_(0.5, 1.5)
                elif name.endswith('weight') and tensor.dim() == 1:  # BatchNorm / LayerNorm scale
                    tensor.normal_(1, 0.1)
                else:
                    tensor.normal_(0, 0.05)
    return model.eval()
