"""The digits training example: a short real run, and a step-by-step check
against torch autograd.

The example lives outside the package, so it is loaded from its path; these
tests skip when scikit-learn (which bundles the data) is not installed.
"""

import importlib.util
import math
import pathlib

import numpy as np
import pytest

pytest.importorskip("sklearn")

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "train_digits.py"


@pytest.fixture(scope="module")
def digits_example():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_short_training_run_learns_digits(digits_example, layout):
    ex = digits_example
    x_train, x_test, y_train, y_test = ex.load_data(seed=0, layout=layout)
    model = ex.build_model((256, 128), layout=layout, seed=0)
    rng = np.random.default_rng(0)

    initial_loss, _ = ex.softmax_cross_entropy(
        ex.logits_of(ex.forward(model, x_train)), y_train)
    initial_acc = ex.evaluate(model, x_test, y_test)
    losses = [ex.train_epoch(model, x_train, y_train, batch_size=32, lr=0.1, rng=rng)
              for _ in range(5)]
    acc = ex.evaluate(model, x_test, y_test)

    assert all(math.isfinite(v) for v in losses), losses
    # The untrained loss is ~2.9; five epochs take it to ~0.035.
    assert losses[-1] < initial_loss / 5, (initial_loss, losses)
    assert losses[-1] < losses[0] / 3, losses
    # Five epochs reach 0.969-0.986 on seeds 0-5 in either layout; 0.93 leaves
    # room for rounding differences between kernels and thread counts while a
    # broken gradient stays far below it (the untrained net scores ~0.15).
    assert initial_acc < 0.5, initial_acc
    assert acc > 0.93, (acc, losses)


def test_main_prints_progress_and_returns_accuracy(digits_example, capsys):
    acc = digits_example.main(["--epochs", "2", "--threads", "1", "--layout", "NHWC"])
    out = capsys.readouterr().out
    assert "epoch   2" in out and "final held-out accuracy" in out, out
    assert 0.9 < acc <= 1.0, out


def _torch_sgd(torch, weights, biases, x, y, batch_list, lr):
    """The same network and SGD written with torch autograd; returns losses."""
    F = torch.nn.functional
    ws = [torch.tensor(w).reshape(*w.shape, 1, 1).requires_grad_() for w in weights]
    bs = [torch.tensor(b).requires_grad_() for b in biases]
    xt = torch.tensor(x).reshape(len(x), -1, 1, 1)
    yt = torch.tensor(y)
    losses = []
    for idx in batch_list:
        h = xt[torch.from_numpy(idx)]
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = F.conv2d(h, w, b)
            if i < len(ws) - 1:
                h = F.relu(h)
        loss = F.cross_entropy(h.flatten(1), yt[torch.from_numpy(idx)])
        for p in ws + bs:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in ws + bs:
                p -= lr * p.grad
        losses.append(loss.item())
    return ([w.detach().reshape(w.shape[0], -1).numpy() for w in ws],
            [b.detach().numpy() for b in bs], losses)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype, rtol, atol", [
    # float64 leaves only summation-order differences, so the match is tight.
    (np.float64, 1e-10, 1e-12),
    # float32 rounding differs between the two GEMMs at every step and those
    # differences are carried through 30 updates.
    (np.float32, 1e-4, 1e-5),
])
def test_sgd_matches_torch_autograd(digits_example, layout, dtype, rtol, atol):
    torch = pytest.importorskip("torch")
    ex = digits_example
    lr, n_steps = 0.1, 30
    x_train, _, y_train, _ = ex.load_data(seed=1, dtype=dtype, layout=layout)
    model = ex.build_model((48, 32), layout=layout, dtype=dtype, seed=1)
    weights0 = [layer.weight.copy() for layer in model]
    biases0 = [layer.bias.copy() for layer in model]
    # Biases start at zero in the example; random ones make the bias gradient
    # path count in the comparison from the first step.
    rng = np.random.default_rng(1)
    biases0 = [(0.1 * rng.standard_normal(b.shape)).astype(dtype) for b in biases0]
    for layer, b in zip(model, biases0):
        layer.bias = b.copy()

    batch_list = []
    while len(batch_list) < n_steps:
        batch_list += ex.batches(len(y_train), 32, rng)
    batch_list = batch_list[:n_steps]

    pw_losses = [ex.sgd_step(model, x_train[idx], y_train[idx], lr) for idx in batch_list]
    # torch's OpenMP pool and pwconv's both spin-wait after a parallel region;
    # on a 2-core machine they then steal the cores from each other and these
    # tiny steps slow down by orders of magnitude. One torch thread avoids it.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t_weights, t_biases, t_losses = _torch_sgd(
            torch, weights0, biases0, x_train, y_train, batch_list, lr)
    finally:
        torch.set_num_threads(torch_threads)

    for i, layer in enumerate(model):
        assert layer.weight.dtype == dtype
        # The run must actually have moved the weights for the match to mean anything.
        assert np.abs(layer.weight - weights0[i]).max() > 1e-2
        np.testing.assert_allclose(layer.weight, t_weights[i], rtol=rtol, atol=atol,
                                   err_msg=f"weight of layer {i}")
        np.testing.assert_allclose(layer.bias, t_biases[i], rtol=rtol, atol=atol,
                                   err_msg=f"bias of layer {i}")
    np.testing.assert_allclose(pw_losses, t_losses, rtol=rtol * 10, atol=atol * 10)
    assert pw_losses[-1] < pw_losses[0]
