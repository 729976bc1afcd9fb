"""Train a small classifier on scikit-learn's digits with pointwise convolutions.

A Dense layer over a feature vector is the same computation as a 1x1 convolution
over a 1x1 feature map whose channels are the vector's entries. This script takes
that recipe literally: each 8x8 digit becomes a 1x1 map with 64 channels, a stack
of ``pwconv.PointwiseConv2d`` layers (relu between them) stands in for the Dense
layers of a multilayer perceptron, and plain minibatch SGD trains them using the
layers' own ``backward``. Only the softmax cross-entropy is written in numpy.

    python examples/train_digits.py
    python examples/train_digits.py --layout NHWC --epochs 40 --hidden 256,128

The data set ships with scikit-learn, so nothing is downloaded.
"""

import argparse
import time

import numpy as np

import pwconv

N_FEATURES = 64  # 8x8 pixels
N_CLASSES = 10


def load_data(seed=0, dtype=np.float32, layout="NCHW", test_size=0.2):
    """Return ``(x_train, x_test, y_train, y_test)`` with x as 1x1 feature maps."""
    # Imported here so the model code stays importable without scikit-learn.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=test_size, random_state=seed,
        stratify=digits.target)
    # Statistics come from the training split only, so the held-out accuracy
    # is not flattered by information from the test images.
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    # Some border pixels are blank in every training image; dividing them by
    # 1 instead of 0 leaves them at zero rather than producing NaNs.
    std[std == 0] = 1.0
    x_train = (x_train - mean) / std
    x_test = (x_test - mean) / std
    return (to_feature_map(x_train, layout, dtype),
            to_feature_map(x_test, layout, dtype),
            y_train.astype(np.int64), y_test.astype(np.int64))


def to_feature_map(x, layout="NCHW", dtype=np.float32):
    """View rows of features ``(N, C)`` as ``(N, C, 1, 1)`` or ``(N, 1, 1, C)``."""
    x = np.ascontiguousarray(x, dtype=dtype)
    n, c = x.shape
    if layout == "NCHW":
        return x.reshape(n, c, 1, 1)
    if layout == "NHWC":
        return x.reshape(n, 1, 1, c)
    raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")


def build_model(hidden=(256, 128), *, in_features=N_FEATURES, n_classes=N_CLASSES,
                layout="NCHW", dtype=np.float32, num_threads=None, seed=0):
    """Return a list of PointwiseConv2d layers: relu on all but the last."""
    rng = np.random.default_rng(seed)
    widths = [in_features, *hidden, n_classes]
    layers = []
    for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        last = i == len(widths) - 2
        layer = pwconv.PointwiseConv2d(
            c_in, c_out, bias=True, activation=None if last else "relu",
            layout=layout, dtype=dtype, num_threads=num_threads)
        # Our own He initialisation, drawn from a seeded generator, makes runs
        # reproducible and lets the test hand identical weights to torch.
        scale = np.sqrt(2.0 / c_in)
        layer.weight = (rng.standard_normal((c_out, c_in)) * scale).astype(dtype)
        layer.bias = np.zeros(c_out, dtype=dtype)
        layers.append(layer)
    return layers


def forward(model, x):
    """Run the layers; return the last layer's 4-D output map."""
    for layer in model:
        x = layer(x)
    return x


def logits_of(output_map):
    """Flatten a 1x1 output map to ``(N, n_classes)`` logits."""
    # With H = W = 1 both layouts hold the same numbers in the same order, so a
    # reshape (no transpose) serves NCHW and NHWC alike.
    return output_map.reshape(output_map.shape[0], -1)


def backward(model, grad_output_map):
    """Backpropagate; each layer stores its ``grad_weight`` and ``grad_bias``."""
    g = grad_output_map
    for layer in reversed(model):
        g = layer.backward(g)
    return g


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy over the batch and its gradient w.r.t. the logits."""
    # Subtracting the row maximum keeps exp() from overflowing; it cancels out.
    z = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(z).sum(axis=1, keepdims=True))
    log_probs = z - log_sum
    n = logits.shape[0]
    loss = -log_probs[np.arange(n), labels].mean()
    grad = np.exp(log_probs)
    grad[np.arange(n), labels] -= 1.0
    grad /= n
    return float(loss), grad.astype(logits.dtype, copy=False)


def sgd_step(model, x, labels, lr):
    """One forward/backward/update on a minibatch; returns the batch loss."""
    y = forward(model, x)
    loss, grad_logits = softmax_cross_entropy(logits_of(y), labels)
    backward(model, grad_logits.reshape(y.shape))
    for layer in model:
        # Assigning new arrays (not updating in place) is what makes the layer
        # repack its weights for the next forward pass.
        layer.weight = layer.weight - lr * layer.grad_weight
        layer.bias = layer.bias - lr * layer.grad_bias
    return loss


def batches(n, batch_size, rng):
    """Index arrays covering a fresh shuffle of ``range(n)``."""
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def train_epoch(model, x, y, *, batch_size, lr, rng):
    """One pass over the training set; returns the sample-weighted mean loss."""
    total = 0.0
    for idx in batches(len(y), batch_size, rng):
        total += sgd_step(model, x[idx], y[idx], lr) * len(idx)
    return total / len(y)


def evaluate(model, x, y):
    """Fraction of samples whose largest logit is the true class."""
    return float((logits_of(forward(model, x)).argmax(axis=1) == y).mean())


def _parse_hidden(text):
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths such as 128,64, got {text!r}")
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive layer widths such as 128,64, got {text!r}")
    return widths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--hidden", type=_parse_hidden, default=(256, 128),
                        help="comma-separated hidden widths (default: 256,128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=("NCHW", "NHWC"), default="NCHW")
    parser.add_argument("--dtype", choices=("float32", "float64"),
                        default="float32")
    parser.add_argument("--threads", type=int, default=None,
                        help="OpenMP threads per call (default: OpenMP's own)")
    args = parser.parse_args(argv)

    dtype = np.dtype(args.dtype)
    x_train, x_test, y_train, y_test = load_data(args.seed, dtype, args.layout)
    model = build_model(args.hidden, layout=args.layout, dtype=dtype,
                        num_threads=args.threads, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    widths = " -> ".join(str(w) for w in (N_FEATURES, *args.hidden, N_CLASSES))
    print(f"digits: {len(y_train)} train / {len(y_test)} held out; "
          f"pointwise convs {widths}, {args.layout}, {dtype.name}")

    start = time.perf_counter()
    acc = evaluate(model, x_test, y_test)
    print(f"epoch {0:3d}  loss      -  held-out acc {acc:.4f}")
    for epoch in range(1, args.epochs + 1):
        loss = train_epoch(model, x_train, y_train, batch_size=args.batch_size,
                           lr=args.lr, rng=rng)
        acc = evaluate(model, x_test, y_test)
        print(f"epoch {epoch:3d}  loss {loss:.4f}  held-out acc {acc:.4f}")
    print(f"final held-out accuracy {acc:.4f} "
          f"({time.perf_counter() - start:.2f} s of training)")
    return acc


if __name__ == "__main__":
    main()
