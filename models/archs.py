"""Architectures of the bundled models.

Every model carries its own input normalisation (a `Normalize` module in front), so the exported ONNX file
takes raw pixel values (float32 in [0, 255], layout NCHW) and calibration data can stay uint8 on disk.
Factories are plain functions so `onnxprune export models/archs.py:resnet20` can build them.
"""
from __future__ import annotations

import torch
from torch import nn

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """(x / 255 - mean) / std, per channel; exported as one Mul and one Add."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        m, s = torch.tensor(mean), torch.tensor(std)
        self.register_buffer("scale", (1.0 / (255.0 * s)).view(1, -1, 1, 1))
        self.register_buffer("shift", (-m / s).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


# ---------------------------------------------------------------- MNIST
def lenet300() -> nn.Module:
    """LeNet-300-100: the fully connected net of the screening paper (784-300-100-10)."""
    return nn.Sequential(
        Normalize(MNIST_MEAN, MNIST_STD), nn.Flatten(),
        nn.Linear(784, 300), nn.ReLU(),
        nn.Linear(300, 100), nn.ReLU(),
        nn.Linear(100, 10),
    )


def lenet5bn() -> nn.Module:
    """Small LeNet-5-style conv net with BatchNorm (32-64 channels, 256 hidden units)."""
    return nn.Sequential(
        Normalize(MNIST_MEAN, MNIST_STD),
        nn.Conv2d(1, 32, 5, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )


# ---------------------------------------------------------------- CIFAR ResNet-20
def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """He et al. basic block; projection shortcut (1x1 conv + BN) when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), nn.ReLU(), conv_bn(cout, cout, 3))
        self.short = conv_bn(cin, cout, 1, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


def resnet20(num_classes: int = 10) -> nn.Module:
    """CIFAR ResNet-20: 3 stages of 3 basic blocks, 16/32/64 channels, residual Adds, BN."""
    layers: list[nn.Module] = [Normalize(CIFAR_MEAN, CIFAR_STD), conv_bn(3, 16), nn.ReLU()]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


# ---------------------------------------------------------------- CIFAR DenseNet
class DenseLayer(nn.Module):
    """BN-ReLU-Conv3x3 producing `growth` new maps, concatenated onto the input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, growth, 3, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.f(x)], 1)


def densenet(growth: int = 12, layers_per_block: int = 4, num_classes: int = 10) -> nn.Module:
    """Small DenseNet (3 dense blocks, growth 12, 1x1 transitions with 2x2 average pooling): Concat-heavy."""
    c = 2 * growth
    mods: list[nn.Module] = [Normalize(CIFAR_MEAN, CIFAR_STD), nn.Conv2d(3, c, 3, 1, 1, bias=False)]
    for b in range(3):
        for _ in range(layers_per_block):
            mods.append(DenseLayer(c, growth))
            c += growth
        if b < 2:
            mods += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)]
            c //= 2
    mods += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*mods)


# ---------------------------------------------------------------- CIFAR MobileNetV2 + SE
class SqueezeExcite(nn.Module):
    """x * hardsigmoid(W2 relu(W1 mean_hw(x))): the excitation Mul couples x with its branch."""

    def __init__(self, c: int, reduction: int = 4) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // reduction, 1), nn.ReLU(),
                               nn.Conv2d(c // reduction, c, 1), nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.f(x)


class InvertedResidual(nn.Module):
    """Expand 1x1 - depthwise 3x3 - SE - project 1x1 (linear); residual Add when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.f = nn.Sequential(
            conv_bn(cin, mid, 1), nn.ReLU6(),
            conv_bn(mid, mid, 3, stride, groups=mid), nn.ReLU6(),
            SqueezeExcite(mid),
            conv_bn(mid, cout, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.f(x)
        return x + y if self.use_res else y


def mobilenetv2(num_classes: int = 10) -> nn.Module:
    """Narrow CIFAR MobileNetV2 (stride-1 stem, expansion 3) with squeeze-excitation in every block."""
    cfg = [(1, 16, 1, 1), (3, 24, 2, 2), (3, 32, 2, 2), (3, 64, 2, 2), (3, 96, 1, 1)]  # expand, cout, n, stride
    mods: list[nn.Module] = [Normalize(CIFAR_MEAN, CIFAR_STD), conv_bn(3, 32), nn.ReLU6()]
    cin = 32
    for t, c, n, s in cfg:
        for i in range(n):
            mods.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    mods += [conv_bn(cin, 256, 1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, num_classes)]
    return nn.Sequential(*mods)


FACTORIES = {"lenet300": lenet300, "lenet5bn": lenet5bn, "resnet20": resnet20,
             "densenet": densenet, "mobilenetv2": mobilenetv2}


# ---------------------------------------------------------------- transformers (CIFAR-10 ViT, MNIST row sequence)
class Attention(nn.Module):
    """Multi-head self-attention, written out (qkv Linear → reshape into heads → softmax(q kᵀ·s) v → merge → proj) so
    both torch exporters emit plain MatMul / Reshape / Transpose / Softmax. Reshape targets use Python ints (-1 for
    the batch), so they are constants in the exported graph."""

    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.h, self.dh, self.t = heads, dim // heads, tokens
        self.scale = self.dh ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x).reshape(-1, self.t, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(-1, self.t, self.h * self.dh))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP."""

    def __init__(self, dim: int, heads: int, hidden: int, tokens: int) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, tokens)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.n1(x))
        return x + self.mlp(self.n2(x))


class ViT(nn.Module):
    """Small ViT for 32×32 images: 4×4 patches (64 tokens + a class token), learned position embedding."""

    def __init__(self, dim: int = 96, depth: int = 4, heads: int = 4, hidden: int = 192, patch: int = 4,
                 image: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        t = (image // patch) ** 2 + 1
        self.norm_in = Normalize(CIFAR_MEAN, CIFAR_STD)
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, t, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden, t) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(self.norm_in(x)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit_cifar(num_classes: int = 10) -> nn.Module:
    """Small ViT: dim 96, 4 blocks, 4 heads of 24, MLP hidden 384 (ratio 4), patch 8 (16 tokens + class token)."""
    return ViT(dim=96, depth=4, heads=4, hidden=384, patch=8, num_classes=num_classes)


def vit4_cifar(num_classes: int = 10) -> nn.Module:
    """CIFAR ViT of usual size (patch 4 as in ViT-Lite/CCT): dim 128, 4 blocks, 4 heads of 32, MLP hidden 512,
    64 tokens + class token, so per-op fixed cost is a small share of the 1-thread time."""
    return ViT(dim=128, depth=4, heads=4, hidden=512, patch=4, num_classes=num_classes)


class RowTransformer(nn.Module):
    """MNIST as a sequence of 28 rows (28 pixels each): row embedding, 2 blocks, mean over tokens, classifier."""

    def __init__(self, dim: int = 64, depth: int = 2, heads: int = 4, hidden: int = 128, num_classes: int = 10):
        super().__init__()
        self.norm_in = Normalize(MNIST_MEAN, MNIST_STD)
        self.embed = nn.Linear(28, dim)
        self.pos = nn.Parameter(torch.randn(1, 28, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden, 28) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(self.norm_in(x).reshape(-1, 28, 28)) + self.pos
        return self.head(self.norm(self.blocks(x)).mean(1))


def rowformer_mnist(num_classes: int = 10) -> nn.Module:
    """MNIST rows as 28 tokens: dim 64, 2 blocks, 4 heads of 16, MLP hidden 128."""
    return RowTransformer(num_classes=num_classes)


FACTORIES.update({"vit_cifar": vit_cifar, "vit4_cifar": vit4_cifar,
                  "rowformer_mnist": rowformer_mnist})
