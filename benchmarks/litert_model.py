"""Build a one-operator CONV_2D TFLite model in memory, without TensorFlow.

LiteRT (``ai_edge_litert``) ships the TFLite flatbuffer schema as
``schema_py_generated``; with the ``flatbuffers`` package that is enough to
write a float32 1x1 convolution model whose weights and bias are constant
buffers.  Constant weights matter: XNNPACK only packs (and so only delegates
efficiently) filters it can see at graph-build time, which is the setting
pwconv's pre-packed layer object competes with.
"""

import numpy as np

__all__ = ["conv1x1_model", "output_hw"]


def output_hw(h, w, stride):
    """Output size of an unpadded 1x1 convolution (TFLite VALID padding)."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    return (h - 1) // sh + 1, (w - 1) // sw + 1


def _byte_vector(builder, data, alignment=16):
    # CreateNumpyVector aligns only to the element size; the interpreter maps
    # constant buffers in place, so give them a SIMD-friendly alignment.
    raw = np.ascontiguousarray(data).tobytes()
    builder.StartVector(1, len(raw), alignment)
    builder.head = builder.head - len(raw)
    builder.Bytes[builder.head:builder.head + len(raw)] = raw
    return builder.EndVector()


def _int_vector(builder, values):
    return builder.CreateNumpyVector(np.asarray(values, dtype=np.int32))


def conv1x1_model(weight, bias, n, h, w, stride=1):
    """Return the bytes of a TFLite model computing one NHWC 1x1 CONV_2D.

    ``weight`` is ``(C_out, C_in)`` float32, ``bias`` ``(C_out,)`` float32 (or
    None); the model's input is ``(n, h, w, C_in)`` and its output
    ``(n, Ho, Wo, C_out)``, VALID padding, no fused activation.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    weight = np.ascontiguousarray(weight, dtype=np.float32)
    c_out, c_in = weight.shape[0], int(np.prod(weight.shape[1:]))
    if bias is None:
        bias = np.zeros(c_out, np.float32)
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ho, wo = output_hw(h, w, (sh, sw))

    b = flatbuffers.Builder(weight.nbytes + bias.nbytes + 4096)

    # Buffer 0 is the schema's mandatory empty sentinel; 1 and 2 hold the
    # constants; the activations' tensors point at buffer 0 (no data).
    buffers = []
    for data in (None, weight.reshape(c_out, 1, 1, c_in), bias):
        vec = _byte_vector(b, data.view(np.uint8)) if data is not None else None
        s.BufferStart(b)
        if vec is not None:
            s.BufferAddData(b, vec)
        buffers.append(s.BufferEnd(b))

    tensor_specs = [  # (name, shape, buffer index)
        ("input", (n, h, w, c_in), 0),
        ("weight", (c_out, 1, 1, c_in), 1),
        ("bias", (c_out,), 2),
        ("output", (n, ho, wo, c_out), 0),
    ]
    tensors = []
    for name, shape, buf in tensor_specs:
        name_off = b.CreateString(name)
        shape_off = _int_vector(b, shape)
        s.TensorStart(b)
        s.TensorAddShape(b, shape_off)
        s.TensorAddType(b, s.TensorType.FLOAT32)
        s.TensorAddBuffer(b, buf)
        s.TensorAddName(b, name_off)
        tensors.append(s.TensorEnd(b))

    s.Conv2DOptionsStart(b)
    s.Conv2DOptionsAddPadding(b, s.Padding.VALID)
    s.Conv2DOptionsAddStrideW(b, sw)
    s.Conv2DOptionsAddStrideH(b, sh)
    s.Conv2DOptionsAddFusedActivationFunction(b, s.ActivationFunctionType.NONE)
    s.Conv2DOptionsAddDilationWFactor(b, 1)
    s.Conv2DOptionsAddDilationHFactor(b, 1)
    options = s.Conv2DOptionsEnd(b)

    op_inputs = _int_vector(b, [0, 1, 2])
    op_outputs = _int_vector(b, [3])
    s.OperatorStart(b)
    s.OperatorAddOpcodeIndex(b, 0)
    s.OperatorAddInputs(b, op_inputs)
    s.OperatorAddOutputs(b, op_outputs)
    s.OperatorAddBuiltinOptionsType(b, s.BuiltinOptions.Conv2DOptions)
    s.OperatorAddBuiltinOptions(b, options)
    operator = s.OperatorEnd(b)

    # Old readers look only at the deprecated int8 code; CONV_2D (3) fits in it.
    s.OperatorCodeStart(b)
    s.OperatorCodeAddDeprecatedBuiltinCode(b, s.BuiltinOperator.CONV_2D)
    s.OperatorCodeAddBuiltinCode(b, s.BuiltinOperator.CONV_2D)
    s.OperatorCodeAddVersion(b, 1)
    opcode = s.OperatorCodeEnd(b)

    def table_vector(start_fn, offsets):
        start_fn(b, len(offsets))
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    tensors_vec = table_vector(s.SubGraphStartTensorsVector, tensors)
    sg_inputs = _int_vector(b, [0])
    sg_outputs = _int_vector(b, [3])
    ops_vec = table_vector(s.SubGraphStartOperatorsVector, [operator])
    sg_name = b.CreateString("main")
    s.SubGraphStart(b)
    s.SubGraphAddTensors(b, tensors_vec)
    s.SubGraphAddInputs(b, sg_inputs)
    s.SubGraphAddOutputs(b, sg_outputs)
    s.SubGraphAddOperators(b, ops_vec)
    s.SubGraphAddName(b, sg_name)
    subgraph = s.SubGraphEnd(b)

    opcodes_vec = table_vector(s.ModelStartOperatorCodesVector, [opcode])
    subgraphs_vec = table_vector(s.ModelStartSubgraphsVector, [subgraph])
    buffers_vec = table_vector(s.ModelStartBuffersVector, buffers)
    description = b.CreateString("pwconv benchmark: one 1x1 CONV_2D")
    s.ModelStart(b)
    s.ModelAddVersion(b, 3)
    s.ModelAddOperatorCodes(b, opcodes_vec)
    s.ModelAddSubgraphs(b, subgraphs_vec)
    s.ModelAddDescription(b, description)
    s.ModelAddBuffers(b, buffers_vec)
    model = s.ModelEnd(b)
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())
