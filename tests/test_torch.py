"""Cross-check against torch.nn.functional.conv2d and autograd."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import pwconv  # noqa: E402
import reference as ref  # noqa: E402
from reference import DTYPES, LAYOUTS, assert_close, make_case  # noqa: E402



@pytest.fixture(autouse=True, scope="module")
def torch_on_one_thread():
    # torch and pwconv each bring an OpenMP runtime; with both at full width
    # on a many-core machine they oversubscribe it.  These tests compare
    # numbers, so torch runs serially and pwconv keeps its default.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CONFIGS = [
    dict(),
    dict(stride=2, padding=1, activation="relu"),
    dict(stride=(1, 2), padding=(1, 0), groups=2, activation="relu6"),
    dict(stride=(2, 1), padding=(0, 1, 2, 1), activation=(-0.5, 0.5)),
    dict(padding=(2, 1, 0, 1), groups=3, activation="relu"),
]
CONFIG_IDS = ["plain", "s2-p1-relu", "s12-p10-g2-relu6",
              "s21-pasym-clamp", "pasym-g3-relu"]


def torch_act(t, activation):
    if activation is None:
        return t
    if activation == "relu":
        return F.relu(t)
    if activation == "relu6":
        return F.relu6(t)
    lo, hi = activation
    return F.hardtanh(t, lo, hi)


def torch_forward(x, weight, bias, residual, *, stride=1, padding=0, groups=1,
                  layout="NCHW", activation=None):
    """The same layer in torch; NHWC arrays go in as channels_last views."""
    def nchw(t):
        return t if layout == "NCHW" else t.permute(0, 3, 1, 2)

    top, bottom, left, right = ref.norm_padding(padding)
    # F.pad takes (left, right, top, bottom); conv2d's own padding is
    # symmetric only.
    xp = F.pad(nchw(x), (left, right, top, bottom))
    w = weight if weight.dim() == 4 else weight[:, :, None, None]
    y = F.conv2d(xp, w, bias, stride=ref.norm_stride(stride), groups=groups)
    if residual is not None:
        y = y + nchw(residual)
    y = torch_act(y, activation)
    return y if layout == "NCHW" else y.permute(0, 2, 3, 1)


def as_tensor(a, grad=False):
    if a is None:
        return None
    t = torch.from_numpy(np.array(a, copy=True))
    return t.requires_grad_(grad)


def make(rng, dtype, layout, config, weight_4d=False):
    kw = dict(stride=config.get("stride", 1), padding=config.get("padding", 0),
              groups=config.get("groups", 1), layout=layout)
    case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=12, c_out=18,
                     h=9, w=7, residual=True, weight_4d=weight_4d,
                     stride=kw["stride"], padding=kw["padding"],
                     groups=kw["groups"])
    return case, kw, config.get("activation")


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_forward_matches_torch(rng, dtype, layout, config):
    case, kw, activation = make(rng, dtype, layout, config, weight_4d=True)
    y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                residual=case["residual"],
                                activation=activation, **kw)
    with torch.no_grad():
        expected = torch_forward(
            as_tensor(case["x"]), as_tensor(case["weight"]),
            as_tensor(case["bias"]), as_tensor(case["residual"]),
            activation=activation, **kw).numpy()
    assert_close(y, expected, k=12 // kw["groups"])


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_autograd_matches_torch(rng, dtype, layout, config):
    case, kw, activation = make(rng, dtype, layout, config)
    x, w, b = (as_tensor(case[k], grad=True) for k in ("x", "weight", "bias"))
    y_t = torch_forward(x, w, b, as_tensor(case["residual"]),
                        activation=activation, **kw)
    g = rng.standard_normal(tuple(y_t.shape)).astype(dtype)
    y_t.backward(torch.from_numpy(g))
    y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                residual=case["residual"],
                                activation=activation, **kw)
    y_torch = y_t.detach().numpy()
    assert_close(y, y_torch, k=12 // kw["groups"])
    # Hand pwconv torch's own output, so that both mask the same elements even
    # where a pre-activation rounds onto a threshold differently.
    dx, dw, db = pwconv.pointwise_conv2d_backward(
        g, case["x"], case["weight"], activation=activation,
        output=np.ascontiguousarray(y_torch) if activation else None, **kw)
    pixels = y.size // 18
    assert_close(dx, x.grad.numpy(), k=18 // kw["groups"])
    assert_close(dw, w.grad.numpy(), k=pixels)
    assert_close(db, b.grad.numpy(), k=pixels)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layer_matches_torch_module(rng, layout):
    conv = torch.nn.Conv2d(12, 18, 1, stride=2, padding=1, groups=3,
                           dtype=torch.float64)
    layer = pwconv.PointwiseConv2d(12, 18, stride=2, padding=1, groups=3,
                                   activation="relu6", layout=layout,
                                   dtype=np.float64)
    layer.weight = conv.weight.detach().numpy()[:, :, 0, 0]
    layer.bias = conv.bias.detach().numpy()
    x = rng.standard_normal(ref.x_shape(2, 12, 8, 9, layout))
    xt = as_tensor(x, grad=True)
    xt_nchw = xt if layout == "NCHW" else xt.permute(0, 3, 1, 2)
    yt = F.relu6(conv(xt_nchw))
    if layout == "NHWC":
        yt = yt.permute(0, 2, 3, 1)
    y = layer(x)
    assert_close(y, yt.detach().numpy(), k=4)
    g = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(g))
    dx = layer.backward(g)
    pixels = y.size // 18
    assert_close(dx, xt.grad.numpy(), k=6)
    assert_close(layer.grad_weight, conv.weight.grad.numpy()[:, :, 0, 0],
                 k=pixels)
    assert_close(layer.grad_bias, conv.bias.grad.numpy(), k=pixels)
