"""One runner per contender, for the pwconv benchmarks.

A runner is built for one layer (a ``Case``) and one thread count; it returns a
zero-argument callable that does exactly the work one inference (or training
step) would do with that library, plus a function returning that call's
result(s) for the correctness check.  Everything a library lets a user do once
per layer (pack weights, build a session, preallocate outputs) happens in the
builder, outside the timed call.

Builders raise ``Unavailable`` when the library is not importable or cannot run
the case (dtype, layout); the caller skips that contender with a note.
"""

import importlib

import numpy as np

__all__ = ["Unavailable", "Case", "Runner", "FORWARD", "TRAINING", "FUSED",
           "TRAIN_PARTS", "OVERHEAD", "forward_contenders", "versions",
           "set_global_threads"]


class Unavailable(Exception):
    """This contender cannot run this case (not installed, unsupported)."""


def _import(name):
    try:
        return importlib.import_module(name)
    except Exception as exc:  # broken installs raise more than ImportError
        raise Unavailable(f"{name} not importable ({type(exc).__name__}: {exc})")


def _out_hw(h, w, s):
    return (h - 1) // s + 1, (w - 1) // s + 1


def _grouped(a, w, groups, transposed=False):
    """a (rows, groups*k) times each group's block of w: w is (k_total, out),
    cut into column blocks (forward: w = W^T), or, transposed, W itself
    (C_out, C_in/groups) cut into row blocks (grad input: a = grad output)."""
    if groups == 1:
        return a @ w
    parts = np.split(a, groups, axis=1)
    if transposed:
        return np.concatenate([p @ wg for p, wg in zip(parts, np.split(w, groups, axis=0))],
                              axis=1)
    return np.concatenate([p @ wg for p, wg in zip(parts, np.split(w, groups, axis=1))],
                          axis=1)


class Case:
    """One layer at one batch, layout and dtype, with its inputs and float64
    references.  Inputs are uniform in [-1, 1): no denormals, no overflow."""

    def __init__(self, name, n, c_in, c_out, h, w, stride, layout, dtype,
                 training=False, seed=0, activation=None, groups=1):
        self.name, self.n, self.c_in, self.c_out = name, n, c_in, c_out
        self.activation, self.groups = activation, groups
        self.h, self.w, self.stride = h, w, stride
        self.layout, self.dtype = layout, np.dtype(dtype)
        self.ho, self.wo = _out_hw(h, w, stride)
        kg = c_in // groups
        rng = np.random.default_rng(seed)
        x_nhwc = rng.uniform(-1, 1, (n, h, w, c_in))
        # Scale the weights so outputs stay O(1) whatever C_in is.
        wt = rng.uniform(-1, 1, (c_out, kg)) / np.sqrt(kg)
        b = rng.uniform(-1, 1, c_out)
        xs = x_nhwc[:, ::stride, ::stride].reshape(-1, c_in)
        ref = (_grouped(xs, wt.T, groups) + b).reshape(n, self.ho, self.wo, c_out)
        keep = None
        if activation == "relu6":
            keep = (ref > 0) & (ref < 6)
            # Within rounding of a threshold, float32 may fall on the other
            # side than this float64 reference: such places get no gradient,
            # so the mask there cannot change a result.
            unsure = (np.abs(ref) < 1e-4) | (np.abs(ref - 6) < 1e-4)
            ref = np.clip(ref, 0, 6)
        elif activation is not None:
            raise ValueError(f"activation {activation!r}: only relu6 is benchmarked")
        self.weight = wt.astype(self.dtype)
        self.bias = b.astype(self.dtype)
        self.x = self.to_layout(x_nhwc).astype(self.dtype)
        self.ref = self.to_layout(ref)
        if training:
            gy = rng.uniform(-1, 1, (n, self.ho, self.wo, c_out))
            if keep is not None:
                gy[unsure] = 0
            gy2 = (gy * keep if keep is not None else gy).reshape(-1, c_out)
            gx = np.zeros_like(x_nhwc)
            gx[:, ::stride, ::stride] = _grouped(gy2, wt, groups, transposed=True).reshape(
                n, self.ho, self.wo, c_in)
            gw = np.concatenate([g2.T @ x2 for g2, x2 in zip(np.split(gy2, groups, axis=1),
                                                            np.split(xs, groups, axis=1))])
            self.grad_output = self.to_layout(gy).astype(self.dtype)
            self.ref_grads = (self.to_layout(gx), gw, gy2.sum(0))

    @property
    def flops(self):
        """Multiply-adds of one forward pass, times two."""
        return 2 * self.n * self.ho * self.wo * self.c_in * self.c_out // self.groups

    def to_layout(self, a_nhwc):
        if self.layout == "NHWC":
            return np.ascontiguousarray(a_nhwc)
        return np.ascontiguousarray(a_nhwc.transpose(0, 3, 1, 2))

    def out_shape(self):
        if self.layout == "NHWC":
            return (self.n, self.ho, self.wo, self.c_out)
        return (self.n, self.c_out, self.ho, self.wo)


class Runner:
    def __init__(self, fn, result, note=None):
        self.fn, self.result, self.note = fn, result, note


def set_global_threads(n):
    """Set the thread counts that are process-wide rather than per call:
    PyTorch's intra-op pool and numpy's BLAS.  Returns an undo callable."""
    undo = []
    try:
        import torch
        prev = torch.get_num_threads()
        torch.set_num_threads(n)
        undo.append(lambda: torch.set_num_threads(prev))
    except Exception:
        pass
    try:
        from threadpoolctl import threadpool_limits
        # Only BLAS: an OpenMP limit here would also cap pwconv, torch and
        # friends, whose counts are set explicitly.
        lim = threadpool_limits(limits=n, user_api="blas")
        undo.append(lim.restore_original_limits)
    except Exception:
        pass
    return lambda: [u() for u in reversed(undo)]


# --------------------------------------------------------------------------
# Forward runners


def pwconv_forward(case, threads, activation=None, residual=None, out=None,
                   layout=None):
    """pwconv's layer on the case; `layout` other than the case's runs that
    path instead, on the input transposed once outside the timed call."""
    pwconv = _import("pwconv")
    layout = layout or case.layout
    layer = pwconv.PointwiseConv2d(case.c_in, case.c_out, bias=True,
                                   stride=case.stride, layout=layout,
                                   dtype=case.dtype, activation=activation,
                                   num_threads=threads)
    layer.weight = case.weight
    layer.bias = case.bias
    to_other = (0, 2, 3, 1) if layout == "NHWC" else (0, 3, 1, 2)
    x = case.x if layout == case.layout else np.ascontiguousarray(case.x.transpose(to_other))
    out_shape = case.out_shape()
    if layout != case.layout:
        out_shape = tuple(out_shape[i] for i in to_other)
    # The output buffer as pwconv's docs advise: pwconv.empty, cache-line
    # aligned (XNNPACK's and torch's own outputs are aligned too).
    y = pwconv.empty(out_shape, case.dtype) if out is None else out
    if residual is None:
        fn = lambda: layer(x, out=y)
    else:
        fn = lambda: layer(x, residual=residual, out=y)
    runner = Runner(fn, lambda: y)
    if layout != case.layout:
        runner.expected = case.ref.transpose(to_other)
    return runner


def pwconv_nhwc_beside_nchw(case, threads):
    """pwconv's own NHWC path on an NCHW table's layer, so NCHW speed / NHWC
    speed is measured side by side in one run instead of across two tables."""
    if case.layout != "NCHW":
        raise Unavailable("only beside NCHW tables")
    return pwconv_forward(case, threads, layout="NHWC")


def pwconv_one_thread_beside(case, threads):
    """pwconv on one thread inside a multi-thread table, so its own n-thread
    / 1-thread speedup is also measured side by side in one run, not only
    across two tables run minutes apart (the bench leaves it out of
    one-thread tables)."""
    return pwconv_forward(case, 1)


def numpy_forward(case, threads):
    # BLAS threads are process-wide (set_global_threads); the GEMM view of a
    # 1x1 conv is what a numpy user would write.
    x, wt, b, s = case.x, case.weight, case.bias, case.stride
    y = np.empty(case.out_shape(), case.dtype)
    if case.layout == "NHWC":
        y2 = y.reshape(-1, case.c_out)
        w_t = wt.T
        if s == 1:
            x2 = x.reshape(-1, case.c_in)

            def fn():
                np.matmul(x2, w_t, out=y2)
                np.add(y2, b, out=y2)
        else:  # the strided gather is part of the work
            def fn():
                np.matmul(x[:, ::s, ::s].reshape(-1, case.c_in), w_t, out=y2)
                np.add(y2, b, out=y2)
    else:
        y3 = y.reshape(case.n, case.c_out, -1)
        b2 = b[:, None]
        if s == 1:
            x3 = x.reshape(case.n, case.c_in, -1)

            def fn():  # stacked matmul: one BLAS GEMM per image, W @ X
                np.matmul(wt, x3, out=y3)
                np.add(y3, b2, out=y3)
        else:
            def fn():
                np.matmul(wt, x[:, :, ::s, ::s].reshape(case.n, case.c_in, -1),
                          out=y3)
                np.add(y3, b2, out=y3)
    return Runner(fn, lambda: y)


def _torch_tensors(case, channels_last):
    torch = _import("torch")
    if channels_last:
        if case.layout != "NHWC":
            raise Unavailable("channels_last runs the NHWC layout")
        # A permuted view of the NHWC buffer is exactly a channels_last tensor.
        x = torch.from_numpy(case.x).permute(0, 3, 1, 2)
        assert x.is_contiguous(memory_format=torch.channels_last)
    else:
        if case.layout != "NCHW":
            raise Unavailable("torch NCHW runs the NCHW layout")
        x = torch.from_numpy(case.x)
    w = torch.from_numpy(case.weight).reshape(case.c_out, -1, 1, 1)
    if channels_last:
        w = w.contiguous(memory_format=torch.channels_last)
    b = torch.from_numpy(case.bias)
    return torch, x, w, b


def _torch_to_layout(t, case):
    a = t.detach()
    if case.layout == "NHWC":
        a = a.permute(0, 2, 3, 1)
    return a.numpy()


def torch_forward(case, threads, channels_last=False):
    torch, x, w, b = _torch_tensors(case, channels_last)
    import torch.nn.functional as F
    s = case.stride
    box = [None]
    inference = torch.inference_mode

    def fn():
        with inference():
            box[0] = F.conv2d(x, w, b, stride=s)

    def result():
        if channels_last:
            assert box[0].is_contiguous(memory_format=torch.channels_last)
        return _torch_to_layout(box[0], case)

    return Runner(fn, result)


def onnx_model_bytes(case):
    onnx = _import("onnx")
    from onnx import TensorProto, helper, numpy_helper
    ho, wo = case.ho, case.wo
    w4 = case.weight.reshape(case.c_out, case.c_in, 1, 1)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[1, 1],
                            strides=[case.stride, case.stride], pads=[0, 0, 0, 0])
    graph = helper.make_graph(
        [node], "pointwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                       [case.n, case.c_in, case.h, case.w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       [case.n, case.c_out, ho, wo])],
        initializer=[numpy_helper.from_array(w4, "w"),
                     numpy_helper.from_array(case.bias, "b")])
    # Pin an opset the runtime surely knows; Conv has not changed since 11.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def ort_forward(case, threads):
    ort = _import("onnxruntime")
    if case.layout != "NCHW":
        raise Unavailable("ONNX Runtime Conv takes NCHW")
    if case.dtype != np.float32:
        raise Unavailable("float32 only")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning workers would keep a core busy after each run and slow the next
    # contender in the interleaved loop.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(onnx_model_bytes(case), so,
                                providers=["CPUExecutionProvider"])
    x = case.x
    y = np.empty(case.out_shape(), np.float32)
    # IO binding writes into a preallocated output, like the others' out=.
    binding = sess.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_output("y", "cpu", 0, np.float32, list(y.shape),
                        y.ctypes.data)
    opts = ort.RunOptions()

    def fn():
        sess.run_with_iobinding(binding, opts)

    return Runner(fn, lambda: y)


def litert_forward(case, threads):
    _import("ai_edge_litert")
    _import("flatbuffers")
    from ai_edge_litert.interpreter import Interpreter
    if case.layout != "NHWC":
        raise Unavailable("TFLite CONV_2D takes NHWC")
    if case.dtype != np.float32:
        raise Unavailable("float32 only")
    import litert_model
    model = litert_model.conv1x1_model(case.weight, case.bias, case.n, case.h,
                                       case.w, case.stride)
    interp = Interpreter(model_content=model, num_threads=threads)
    interp.allocate_tensors()
    ops = [d["op_name"] for d in interp._get_ops_details()]
    if "DELEGATE" not in ops:
        raise Unavailable(f"XNNPACK delegate not applied (ops: {ops})")
    i = interp.get_input_details()[0]["index"]
    o = interp.get_output_details()[0]["index"]
    # Write the input once into the interpreter's own buffer: the timed call
    # is invoke() alone, reading the activations in place like the others.
    interp.set_tensor(i, case.x)
    out_view = interp.tensor(o)
    fn = interp.invoke
    return Runner(fn, lambda: out_view().copy(), note="XNNPACK delegate took the CONV_2D node")


FORWARD = {  # name -> (builder, layouts, dtypes)
    "pwconv": (pwconv_forward, ("NCHW", "NHWC"), ("float32", "float64")),
    "numpy": (numpy_forward, ("NCHW", "NHWC"), ("float32", "float64")),
    "torch": (torch_forward, ("NCHW",), ("float32", "float64")),
    "torch CL": (lambda c, t: torch_forward(c, t, channels_last=True),
                 ("NHWC",), ("float32", "float64")),
    "pwconv NHWC": (pwconv_nhwc_beside_nchw, ("NCHW",), ("float32",)),
    "pwconv 1t": (pwconv_one_thread_beside, ("NHWC",), ("float32",)),
    "ORT": (ort_forward, ("NCHW",), ("float32",)),
    "XNNPACK": (litert_forward, ("NHWC",), ("float32",)),
}


def forward_contenders(layout, dtype):
    return [k for k, (_, lays, dts) in FORWARD.items()
            if layout in lays and dtype in dts]


# --------------------------------------------------------------------------
# Fused epilogue (pwconv only)


def _residual(case):
    # In a network the residual is an earlier layer's output, which pwconv
    # allocates cache-line aligned (as `out` buffers are advised to be); in
    # place, it is also this call's `out`.  A numpy-allocated one starts 16
    # bytes into a line, so every 64-byte store of the in-place sum straddles
    # two lines.  Over nine MobileNetV2 b1 NHWC shapes, 1 thread, in one
    # process: in place 1.17 -> 1.08 of the plain call's time, residual in
    # its own buffer 1.27 -> 1.18; this suite (90 s budget) read 1.07 / 1.13
    # after, against 1.10 / 1.17 in the last full run before.
    rng = np.random.default_rng(1)
    r = _import("pwconv").empty(case.out_shape(), case.dtype)
    r[...] = rng.uniform(-1, 1, case.out_shape())
    return r


def fused_plain(case, threads):
    return pwconv_forward(case, threads)


def fused_fused(case, threads):
    r = _residual(case)
    run = pwconv_forward(case, threads, activation="relu6", residual=r)
    run.expected = np.clip(case.ref + r, 0, 6)
    return run


def fused_in_place(case, threads):
    # The sum formed in the residual's own buffer (out=residual), as a
    # network's skip connection allows: no separate residual stream.  Every
    # call overwrites r with clip(conv + r, 0, 6), which stays in [0, 6].
    r = _residual(case)
    run = pwconv_forward(case, threads, activation="relu6", residual=r, out=r)
    run.expected = np.clip(case.ref + _residual(case), 0, 6)
    return run


def fused_numpy_epilogue(case, threads):
    r = _residual(case)
    run = pwconv_forward(case, threads)
    y = run.result()
    conv = run.fn

    def fn():  # what a user does without fusion: two more passes over y
        conv()
        np.add(y, r, out=y)
        np.clip(y, 0, 6, out=y)

    out = Runner(fn, run.result)
    out.expected = np.clip(case.ref + r, 0, 6)
    return out


FUSED = {"plain": fused_plain, "fused relu6+residual": fused_fused,
         "fused, in place (out=residual)": fused_in_place,
         "plain + numpy epilogue": fused_numpy_epilogue}


# --------------------------------------------------------------------------
# Training: forward + grad input + grad weight + grad bias


def pwconv_training(case, threads):
    pwconv = _import("pwconv")
    layer = pwconv.PointwiseConv2d(case.c_in, case.c_out, bias=True,
                                   stride=case.stride, groups=case.groups,
                                   layout=case.layout, dtype=case.dtype,
                                   num_threads=threads, activation=case.activation)
    layer.weight = case.weight
    layer.bias = case.bias
    x, gy = case.x, case.grad_output
    y = pwconv.empty(case.out_shape(), case.dtype)
    # Preallocated like the numpy contender's gradients.
    gx = pwconv.empty(x.shape, case.dtype)
    box = [None]

    def fn():
        layer(x, out=y)
        box[0] = layer.backward(gy, out=gx)

    def result():
        return (y, box[0], np.asarray(layer.grad_weight).reshape(case.c_out, -1),
                np.asarray(layer.grad_bias))

    return Runner(fn, result)


def numpy_training(case, threads):
    x, wt, b, gy, s = case.x, case.weight, case.bias, case.grad_output, case.stride
    if s != 1 or case.groups != 1:
        return _numpy_training_strided_grouped(case)
    dt, n, ci, co = case.dtype, case.n, case.c_in, case.c_out
    y = np.empty(case.out_shape(), dt)
    gx = np.empty(x.shape, dt)
    gw = np.empty((co, ci), dt)
    gb = np.empty(co, dt)
    relu6 = case.activation == "relu6"
    # relu6: clipped in place; grad output masked into its own buffer by
    # the derivative read off the output, in three passes.
    gym = np.empty(gy.shape, dt) if relu6 else gy
    above = np.empty(y.shape, bool) if relu6 else None
    below = np.empty(y.shape, bool) if relu6 else None

    def activate():
        np.clip(y, 0, 6, out=y)
        np.greater(y, 0, out=above)
        np.less(y, 6, out=below)
        np.logical_and(above, below, out=above)
        np.multiply(gy, above, out=gym)

    if case.layout == "NHWC":
        x2, y2 = x.reshape(-1, ci), y.reshape(-1, co)
        gy2, gx2 = gym.reshape(-1, co), gx.reshape(-1, ci)
        w_t, gy2_t = wt.T, gy2.T

        def fn():
            np.matmul(x2, w_t, out=y2)
            np.add(y2, b, out=y2)
            if relu6:
                activate()
            np.matmul(gy2, wt, out=gx2)
            np.matmul(gy2_t, x2, out=gw)
            np.sum(gy2, axis=0, out=gb)
    else:
        x3, y3 = x.reshape(n, ci, -1), y.reshape(n, co, -1)
        gy3, gx3 = gym.reshape(n, co, -1), gx.reshape(n, ci, -1)
        w_t, b2 = wt.T, b[:, None]
        tmp = np.empty((co, ci), dt)

        def fn():
            np.matmul(wt, x3, out=y3)
            np.add(y3, b2, out=y3)
            if relu6:
                activate()
            np.matmul(w_t, gy3, out=gx3)
            # Per image, accumulated: a stacked matmul would materialise an
            # (N, C_out, C_in) temporary.
            np.matmul(gy3[0], x3[0].T, out=gw)
            for i in range(1, n):
                np.matmul(gy3[i], x3[i].T, out=tmp)
                np.add(gw, tmp, out=gw)
            np.sum(gy3, axis=(0, 2), out=gb)

    return Runner(fn, lambda: (y, gx, gw, gb))


def _numpy_training_strided_grouped(case):
    """What a numpy user writes for a strided or grouped layer: the strided
    pixels copied out, one GEMM per group and pass into column or row slices
    of the results, grad input scattered back into a zeroed array."""
    if case.activation is not None:
        raise Unavailable("the strided and grouped numpy runner has no activation")
    x, wt, b, gy, s, g = case.x, case.weight, case.bias, case.grad_output, case.stride, case.groups
    dt, n, ci, co, ho, wo = case.dtype, case.n, case.c_in, case.c_out, case.ho, case.wo
    kg, ng = ci // g, co // g
    ins = [slice(i * kg, (i + 1) * kg) for i in range(g)]
    outs = [slice(i * ng, (i + 1) * ng) for i in range(g)]
    y = np.empty(case.out_shape(), dt)
    gx = np.zeros(x.shape, dt)
    gw = np.empty(wt.shape, dt)
    gb = np.empty(co, dt)
    nhwc = case.layout == "NHWC"
    picked = (slice(None), slice(None, None, s), slice(None, None, s))
    picked = picked + (slice(None),) if nhwc else (slice(None), slice(None)) + picked[1:]
    xs = np.empty((n, ho, wo, ci) if nhwc else (n, ci, ho, wo), dt) if s != 1 else x
    gxs = np.empty(xs.shape, dt) if s != 1 else gx
    if nhwc:
        x2, y2, gy2, gx2 = (a.reshape(-1, a.shape[-1]) for a in (xs, y, gy, gxs))

        def fn():
            if s != 1:
                np.copyto(xs, x[picked])
            for i, o in zip(ins, outs):
                np.matmul(x2[:, i], wt[o].T, out=y2[:, o])
            np.add(y2, b, out=y2)
            for i, o in zip(ins, outs):
                np.matmul(gy2[:, o], wt[o], out=gx2[:, i])
                np.matmul(gy2[:, o].T, x2[:, i], out=gw[o])
            if s != 1:
                gx[picked] = gxs
            np.sum(gy2, axis=0, out=gb)
    else:
        x3, y3, gy3, gx3 = (a.reshape(n, a.shape[1], -1) for a in (xs, y, gy, gxs))
        tmp = np.empty((ng, kg), dt)
        b2 = b[:, None]

        def fn():
            if s != 1:
                np.copyto(xs, x[picked])
            for i, o in zip(ins, outs):
                np.matmul(wt[o], x3[:, i], out=y3[:, o])
            np.add(y3, b2, out=y3)
            for i, o in zip(ins, outs):
                np.matmul(wt[o].T, gy3[:, o], out=gx3[:, i])
                np.matmul(gy3[0, o], x3[0, i].T, out=gw[o])
                for k in range(1, n):
                    np.matmul(gy3[k, o], x3[k, i].T, out=tmp)
                    np.add(gw[o], tmp, out=gw[o])
            if s != 1:
                gx[picked] = gxs
            np.sum(gy3, axis=(0, 2), out=gb)

    return Runner(fn, lambda: (y, gx, gw, gb))


def torch_training(case, threads, channels_last=False):
    torch, x, w, b = _torch_tensors(case, channels_last)
    import torch.nn.functional as F
    x = x.detach().requires_grad_()
    w = w.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    b = b.detach().clone().requires_grad_()
    gy = torch.from_numpy(case.grad_output)
    if channels_last:
        gy = gy.permute(0, 3, 1, 2)
    s = case.stride
    box = [None]

    def fn():
        # Fresh grads each step (as after optimizer.zero_grad(set_to_none=True)),
        # so no accumulation pass is timed.
        x.grad = w.grad = b.grad = None
        y = F.conv2d(x, w, b, stride=s, groups=case.groups)
        if case.activation == "relu6":
            y = F.relu6(y)
        y.backward(gy)
        box[0] = y

    def result():
        return (_torch_to_layout(box[0], case), _torch_to_layout(x.grad, case),
                w.grad.detach().reshape(case.c_out, -1).numpy(),
                b.grad.detach().numpy())

    return Runner(fn, result)


TRAINING = {  # name -> (builder, layouts)
    "pwconv": (pwconv_training, ("NCHW", "NHWC")),
    # One thread beside a multi-thread table (see pwconv_one_thread_beside).
    "pwconv 1t": (lambda c, t: pwconv_training(c, 1), ("NCHW", "NHWC")),
    "numpy": (numpy_training, ("NCHW", "NHWC")),
    "torch": (torch_training, ("NCHW",)),
    "torch CL": (lambda c, t: torch_training(c, t, channels_last=True), ("NHWC",)),
}


# --------------------------------------------------------------------------
# pwconv's passes one at a time (functional API): forward, grad input, grad
# weight (+ bias).  Each is one GEMM of the same size.


def _pw_functional(case, threads, mask):
    pwconv = _import("pwconv")
    x, wt, b = case.x, case.weight, case.bias
    gy = getattr(case, "grad_output", None)
    kw = dict(stride=case.stride, layout=case.layout, num_threads=threads)
    box = [None]
    if mask is None:
        y = pwconv.empty(case.out_shape(), case.dtype)

        def fn():
            pwconv.pointwise_conv2d(x, wt, b, out=y, **kw)

        return Runner(fn, lambda: y)

    def fn():
        box[0] = pwconv.pointwise_conv2d_backward(gy, x, wt, output_mask=mask, **kw)

    return Runner(fn, lambda: box[0])


TRAIN_PARTS = {
    "forward": lambda c, t: _pw_functional(c, t, None),
    "grad input": lambda c, t: _pw_functional(c, t, (True, False, False)),
    "grad weight": lambda c, t: _pw_functional(c, t, (False, True, False)),
    "grad weight+bias": lambda c, t: _pw_functional(c, t, (False, True, True)),
}


# --------------------------------------------------------------------------
# Python overhead: the same calls on a layer whose compute is negligible.


def overhead_layer(case, threads):
    return pwconv_forward(case, threads)


def overhead_functional(case, threads):
    return _pw_functional(case, threads, None)


OVERHEAD = {"pwconv layer": overhead_layer,
            "pwconv functional": overhead_functional,
            "numpy": numpy_forward}


# --------------------------------------------------------------------------


def versions():
    """Installed versions of the peers (None when not importable)."""
    out = {}
    for mod, key in [("numpy", "numpy"), ("torch", "torch"),
                     ("onnxruntime", "onnxruntime"), ("onnx", "onnx"),
                     ("ai_edge_litert", "ai_edge_litert"),
                     ("flatbuffers", "flatbuffers"),
                     ("threadpoolctl", "threadpoolctl"), ("pwconv", "pwconv")]:
        try:
            m = importlib.import_module(mod)
            v = getattr(m, "__version__", None)
            if v is None:
                from importlib.metadata import version
                v = version(mod.replace("_", "-"))
            out[key] = str(v)
        except Exception:
            out[key] = None
    return out
