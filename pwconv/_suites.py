"""The layer suites that ``python -m pwconv bench`` and ``benchmarks/`` time.

Each layer is ``(name, c_in, c_out, height, width, stride)`` at 224x224 input.
"""

__all__ = ["SUITES", "mobilenet_v2", "resnet50"]


def mobilenet_v2():
    """The 34 pointwise layers of MobileNetV2 (width 1.0, 224x224 input)."""
    # (expansion t, output channels c, repeats n, first stride s), as in the paper.
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    layers = []
    c_in, size = 32, 112
    for block, (t, c, n, s) in enumerate(settings):
        for i in range(n):
            hidden = c_in * t
            if t != 1:
                layers.append((f"b{block}.{i}.expand", c_in, hidden, size, size, 1))
            if i == 0:
                size //= s  # the stride lives in the depthwise conv
            layers.append((f"b{block}.{i}.project", hidden, c, size, size, 1))
            c_in = c
    layers.append(("head", 320, 1280, 7, 7, 1))
    return layers


def resnet50():
    """The 1x1 layers of ResNet-50 v1.5 with distinct shapes (15), including
    the strided projection shortcuts (torchvision puts that stride on the 1x1)."""
    layers = []
    c_in, size = 64, 56
    for stage, (width, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)]):
        out = width * 4
        stride = 1 if stage == 0 else 2
        layers.append((f"s{stage}.reduce0", c_in, width, size, size, 1))
        size_out = size // stride
        layers.append((f"s{stage}.expand", width, out, size_out, size_out, 1))
        if stride != 1:  # stage 0's shortcut has the shape of its expand layer
            layers.append((f"s{stage}.shortcut", c_in, out, size, size, stride))
        if blocks > 1:
            layers.append((f"s{stage}.reduce", out, width, size_out, size_out, 1))
        c_in, size = out, size_out
    return layers


SUITES = {"mobilenet_v2": mobilenet_v2, "resnet50": resnet50}
