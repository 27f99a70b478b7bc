"""An independent NumPy implementation of the BiT ResNet-v2 forward pass, read from BiT `.npz` keys.

Used as the reference computation that our Keras model and exported modules must reproduce.
"""

import numpy as np


def _conv(x, kernel, stride):
    # Weight standardisation as in BiT: per output channel over H, W, in-channels; eps 1e-10.
    kernel = kernel.astype(np.float64)
    mean = kernel.mean(axis=(0, 1, 2), keepdims=True)
    var = kernel.var(axis=(0, 1, 2), keepdims=True)
    kernel = (kernel - mean) / np.sqrt(var + 1e-10)
    kh, kw, _, out_c = kernel.shape
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, out_c))
    for i in range(kh):
        for j in range(kw):
            patch = x[
                :, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride
            ]
            out += patch @ kernel[i, j]
    return out


def _pad(x, k):
    total = k - 1
    return np.pad(
        x, ((0, 0), (total // 2, total - total // 2), (total // 2, total - total // 2), (0, 0))
    )


def _gn(x, gamma, beta, groups):
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + 1e-5)).reshape(x.shape) * gamma + beta


def _maxpool3x3s2(x):
    n, h, w, c = x.shape
    oh, ow = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    out = np.full((n, oh, ow, c), -np.inf)
    for i in range(3):
        for j in range(3):
            out = np.maximum(out, x[:, i : i + 2 * (oh - 1) + 1 : 2, j : j + 2 * (ow - 1) + 1 : 2])
    return out


def bit_features(weights, images, groups=32):
    """Pre-logits features of a BiT checkpoint (`weights`: BiT key -> array) on images in [0, 1]."""
    relu = lambda t: np.maximum(t, 0)
    w = lambda key: weights["resnet/" + key]
    x = images.astype(np.float64) * 2 - 1
    x = _conv(_pad(x, 7), w("root_block/standardized_conv2d/kernel"), 2)
    x = _maxpool3x3s2(_pad(x, 3))
    for b in range(1, 5):
        u = 1
        while f"resnet/block{b}/unit{u:02d}/a/group_norm/gamma" in weights:
            p = f"block{b}/unit{u:02d}/"
            stride = 2 if (b > 1 and u == 1) else 1
            pre = relu(_gn(x, w(p + "a/group_norm/gamma"), w(p + "a/group_norm/beta"), groups))
            proj = "resnet/" + p + "a/proj/standardized_conv2d/kernel"
            shortcut = _conv(pre, weights[proj], stride) if proj in weights else x
            h = _conv(pre, w(p + "a/standardized_conv2d/kernel"), 1)
            h = relu(_gn(h, w(p + "b/group_norm/gamma"), w(p + "b/group_norm/beta"), groups))
            h = _conv(_pad(h, 3), w(p + "b/standardized_conv2d/kernel"), stride)
            h = relu(_gn(h, w(p + "c/group_norm/gamma"), w(p + "c/group_norm/beta"), groups))
            x = _conv(h, w(p + "c/standardized_conv2d/kernel"), 1) + shortcut
            u += 1
    x = relu(_gn(x, w("group_norm/gamma"), w("group_norm/beta"), groups))
    return x.mean(axis=(1, 2))


def random_bit_checkpoint(block_units, width_factor, num_classes=0, groups=32, seed=0):
    """A BiT-format weight dict with random values (non-trivial norms), built from the key scheme."""
    rng = np.random.default_rng(seed)
    weights = {}

    def conv(key, k, cin, cout):
        weights["resnet/" + key] = rng.normal(0, 1, (k, k, cin, cout)).astype(np.float32)

    def gn(key, c):
        weights["resnet/" + key + "/gamma"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        weights["resnet/" + key + "/beta"] = rng.normal(0, 0.1, c).astype(np.float32)

    root = int(64 * width_factor)
    conv("root_block/standardized_conv2d/kernel", 7, 3, root)
    cin = root
    for b, units in enumerate(block_units, start=1):
        cout = int(256 * width_factor * 2 ** (b - 1))
        mid = cout // 4
        for u in range(1, units + 1):
            p = f"block{b}/unit{u:02d}/"
            gn(p + "a/group_norm", cin)
            if u == 1:
                conv(p + "a/proj/standardized_conv2d/kernel", 1, cin, cout)
            conv(p + "a/standardized_conv2d/kernel", 1, cin, mid)
            gn(p + "b/group_norm", mid)
            conv(p + "b/standardized_conv2d/kernel", 3, mid, mid)
            gn(p + "c/group_norm", mid)
            conv(p + "c/standardized_conv2d/kernel", 1, mid, cout)
            cin = cout
    gn("group_norm", cin)
    if num_classes:
        weights["resnet/head/conv2d/kernel"] = rng.normal(0, 0.1, (1, 1, cin, num_classes)).astype(
            np.float32
        )
        weights["resnet/head/conv2d/bias"] = rng.normal(0, 0.1, num_classes).astype(np.float32)
    return weights
