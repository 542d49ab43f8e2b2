"""ONNX -> TFLite for the MiniFASNet liveness graphs (build time only).

Why: TFLite's default XNNPACK kernels run these small depthwise-separable CPU nets 2-3x faster
than ONNX Runtime's MLAS on one thread (FaceMesh measured 1.6 ms vs 5.3 ms on the same core),
and the liveness budget is 5 ms per decided track. No converter on PyPI does ONNX -> TFLite
without TensorFlow (onnx2tf, ai-edge-torch), so this writes the flatbuffer directly with the
schema bindings of the `tflite` package, for exactly the operators MiniFASNet uses:

    Conv (regular / depthwise, 1x1 / 3x3 / 5x5)  -> [PAD +] CONV_2D / DEPTHWISE_CONV_2D
    Max(x, Mul(x, slope))  (PReLU, see convert_minifasnet.prelu_as_max) -> PRELU
    Add, Mul (squeeze-excitation gate), Relu, Sigmoid -> ADD, MUL, RELU, LOGISTIC
    ReduceMean over H, W -> MEAN;  Flatten -> RESHAPE
    MatMul [+ BatchNormalization folded in] -> FULLY_CONNECTED

Layout: activations become NHWC; ONNX's symmetric padding becomes an explicit PAD + VALID
because TFLite's SAME pads the bottom/right first at stride 2, which would shift every window by
one pixel. Any other operator is refused (ModelError), never approximated. The caller checks the
result against ONNX Runtime (models/build.py, tests/test_liveness_model.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import ModelError


@dataclass
class _Graph:
    """TFLite tensors, buffers and operators being collected before serialisation."""

    tensors: list[tuple[str, list[int], int, int]] = field(default_factory=list)  # name, shape, type, buffer
    buffers: list[bytes] = field(default_factory=lambda: [b""])  # buffer 0: the empty sentinel
    ops: list[tuple[int, list[int], list[int], tuple]] = field(default_factory=list)  # opcode index, ins, outs, options
    opcodes: list[int] = field(default_factory=list)

    def tensor(self, name: str, shape: list[int], data: np.ndarray | None = None) -> int:
        from tflite.TensorType import TensorType

        buffer = 0
        ttype = TensorType.FLOAT32
        if data is not None:
            if data.dtype == np.int32:
                ttype = TensorType.INT32
            else:
                data = data.astype(np.float32)
            self.buffers.append(np.ascontiguousarray(data).tobytes())
            buffer = len(self.buffers) - 1
        self.tensors.append((name, [int(s) for s in shape], ttype, buffer))
        return len(self.tensors) - 1

    def const(self, name: str, data: np.ndarray) -> int:
        return self.tensor(name, list(data.shape), data)

    def op(self, code: int, inputs: list[int], outputs: list[int], options: tuple = ()) -> None:
        if code not in self.opcodes:
            self.opcodes.append(code)
        self.ops.append((self.opcodes.index(code), inputs, outputs, options))


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def convert(src: Path, out: Path) -> None:
    """Write `src` (ONNX, NCHW input) as a TFLite flatbuffer with an NHWC input."""
    import onnx
    from onnx import numpy_helper, shape_inference
    from tflite.BuiltinOperator import BuiltinOperator as Op

    model = shape_inference.infer_shapes(onnx.load(str(src)))
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    shapes = {
        v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
        for v in [*graph.value_info, *graph.input, *graph.output]
    }
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    g = _Graph()
    ids: dict[str, int] = {}

    def nhwc(name: str) -> list[int]:
        s = shapes[name]
        return [s[0], s[2], s[3], s[1]] if len(s) == 4 else s

    def new(name: str) -> int:
        ids[name] = g.tensor(name, nhwc(name))
        return ids[name]

    (inp,) = [i for i in graph.input if i.name not in inits]
    new(inp.name)
    slopes: dict[str, np.ndarray] = {}  # output of a Mul folded into a PRELU -> its slope
    folded_bn: dict[str, str] = {}  # BatchNormalization output -> the MatMul output it folds into
    for node in graph.node:
        kind, name = node.op_type, node.name
        if kind == "Conv":
            _conv(g, node, _attrs(node), inits, ids, new, shapes)
        elif kind == "Mul" and node.input[1] in inits:
            users = consumers.get(node.output[0], [])
            if len(users) != 1 or users[0].op_type != "Max" or node.input[0] not in users[0].input:
                raise ModelError(f"{src.name}: {name}: a constant Mul that is not part of a PReLU")
            slope = inits[node.input[1]].reshape(-1)
            if slope.max() > 1.0:
                raise ModelError(f"{src.name}: {name}: Max(x, a*x) is a PReLU only for slopes <= 1")
            slopes[node.output[0]] = slope
            ids[node.output[0]] = -1
        elif kind == "Max":
            a, b = node.input
            if a not in slopes and b not in slopes:
                raise ModelError(f"{src.name}: {name}: a Max that is not part of a PReLU")
            x, scaled = (a, b) if b in slopes else (b, a)
            alpha = slopes[scaled].reshape(1, 1, -1)
            g.op(Op.PRELU, [ids[x], g.const(f"{name}/alpha", alpha)], [new(node.output[0])])
        elif kind in ("Add", "Mul"):
            from tflite.BuiltinOptions import BuiltinOptions

            code, opt = (Op.ADD, BuiltinOptions.AddOptions) if kind == "Add" else (Op.MUL, BuiltinOptions.MulOptions)
            g.op(code, [ids[node.input[0]], ids[node.input[1]]], [new(node.output[0])], ("empty", opt))
        elif kind in ("Relu", "Sigmoid"):
            g.op(Op.RELU if kind == "Relu" else Op.LOGISTIC, [ids[node.input[0]]], [new(node.output[0])])
        elif kind == "ReduceMean":
            attrs = _attrs(node)
            if list(attrs.get("axes", [])) != [2, 3] or attrs.get("keepdims", 1) != 1:
                raise ModelError(f"{src.name}: {name}: only a kept-dims mean over H, W is supported")
            axis = g.const(f"{name}/axis", np.array([1, 2], np.int32))
            g.op(Op.MEAN, [ids[node.input[0]], axis], [new(node.output[0])], ("keep_dims",))
        elif kind == "Flatten":
            s = shapes[node.input[0]]
            if len(s) != 4 or s[2] != 1 or s[3] != 1:
                raise ModelError(f"{src.name}: {name}: only a 1x1 spatial Flatten keeps NCHW order in NHWC")
            target = np.array([s[0], s[1]], np.int32)
            g.op(Op.RESHAPE, [ids[node.input[0]], g.const(f"{name}/shape", target)], [new(node.output[0])], ("reshape", target))
        elif kind == "MatMul":
            _fully_connected(g, node, graph, inits, ids, new, consumers, folded_bn)
        elif kind == "BatchNormalization":
            if node.output[0] not in folded_bn:
                raise ModelError(f"{src.name}: {name}: BatchNormalization not after a MatMul")
            ids[node.output[0]] = ids[folded_bn[node.output[0]]]
        else:
            raise ModelError(f"{src.name}: operator {kind} ({name}) is not supported by onnx_to_tflite")
    outputs = [ids[o.name] for o in graph.output]
    out.write_bytes(_serialise(g, [ids[inp.name]], outputs))


def _conv(g: _Graph, node, attrs: dict, inits: dict, ids: dict, new, shapes: dict) -> None:
    from tflite.BuiltinOperator import BuiltinOperator as Op

    w = inits[node.input[1]]  # [O, I/group, kh, kw]
    bias = inits[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
    group = attrs.get("group", 1)
    stride = attrs.get("strides", [1, 1])
    pads = attrs.get("pads", [0, 0, 0, 0])  # top, left, bottom, right
    if attrs.get("dilations", [1, 1]) != [1, 1]:
        raise ModelError(f"{node.name}: dilated convolutions are not supported")
    x = ids[node.input[0]]
    if any(pads):
        pad = np.array([[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]], np.int32)
        n, c, h, wd = shapes[node.input[0]]
        padded = g.tensor(f"{node.name}/padded", [n, h + pads[0] + pads[2], wd + pads[1] + pads[3], c])
        g.op(Op.PAD, [x, g.const(f"{node.name}/pads", pad)], [padded])
        x = padded
    in_channels = shapes[node.input[0]][1]
    if group == 1:
        filt = w.transpose(0, 2, 3, 1)  # OHWI
        code, options = Op.CONV_2D, ("conv", stride)
    elif group == in_channels and w.shape[1] == 1 and w.shape[0] == in_channels:
        filt = w.transpose(1, 2, 3, 0)  # 1HWO
        code, options = Op.DEPTHWISE_CONV_2D, ("depthwise", stride)
    else:
        raise ModelError(f"{node.name}: grouped convolution (group={group}) is not supported")
    f_id = g.const(f"{node.name}/filter", filt)
    b_id = g.const(f"{node.name}/bias", bias)
    g.op(code, [x, f_id, b_id], [new(node.output[0])], options)


def _fully_connected(g: _Graph, node, graph, inits: dict, ids: dict, new, consumers: dict, folded_bn: dict) -> None:
    from tflite.BuiltinOperator import BuiltinOperator as Op

    if node.input[1] not in inits:
        raise ModelError(f"{node.name}: MatMul with a non-constant right side is not supported")
    w = inits[node.input[1]].T.astype(np.float64)  # [N, K]
    bias = np.zeros(w.shape[0])
    output = node.output[0]
    users = consumers.get(output, [])
    if len(users) == 1 and users[0].op_type == "BatchNormalization":
        bn = users[0]
        gamma, beta, mean, var = (inits[n].astype(np.float64) for n in bn.input[1:5])
        eps = _attrs(bn).get("epsilon", 1e-5)
        scale = gamma / np.sqrt(var + eps)
        w = w * scale[:, None]
        bias = beta - mean * scale
        folded_bn[bn.output[0]] = output
    f_id = g.const(f"{node.name}/weights", w.astype(np.float32))
    b_id = g.const(f"{node.name}/bias", bias.astype(np.float32))
    g.op(Op.FULLY_CONNECTED, [ids[node.input[0]], f_id, b_id], [new(output)], ("fc",))


def _options(builder, options: tuple) -> tuple[int, int]:
    """(BuiltinOptions type, table offset) for an operator's options tuple."""
    import tflite
    from tflite.BuiltinOptions import BuiltinOptions as O
    from tflite.Padding import Padding

    if not options:
        return O.NONE, 0
    kind = options[0]
    if kind in ("conv", "depthwise"):
        sh, sw = options[1]
        if kind == "conv":
            tflite.Conv2DOptionsStart(builder)
            tflite.Conv2DOptionsAddPadding(builder, Padding.VALID)
            tflite.Conv2DOptionsAddStrideH(builder, sh)
            tflite.Conv2DOptionsAddStrideW(builder, sw)
            tflite.Conv2DOptionsAddDilationHFactor(builder, 1)
            tflite.Conv2DOptionsAddDilationWFactor(builder, 1)
            return O.Conv2DOptions, tflite.Conv2DOptionsEnd(builder)
        tflite.DepthwiseConv2DOptionsStart(builder)
        tflite.DepthwiseConv2DOptionsAddPadding(builder, Padding.VALID)
        tflite.DepthwiseConv2DOptionsAddStrideH(builder, sh)
        tflite.DepthwiseConv2DOptionsAddStrideW(builder, sw)
        tflite.DepthwiseConv2DOptionsAddDepthMultiplier(builder, 1)
        tflite.DepthwiseConv2DOptionsAddDilationHFactor(builder, 1)
        tflite.DepthwiseConv2DOptionsAddDilationWFactor(builder, 1)
        return O.DepthwiseConv2DOptions, tflite.DepthwiseConv2DOptionsEnd(builder)
    if kind == "keep_dims":
        tflite.ReducerOptionsStart(builder)
        tflite.ReducerOptionsAddKeepDims(builder, True)
        return O.ReducerOptions, tflite.ReducerOptionsEnd(builder)
    if kind == "reshape":
        shape = [int(s) for s in options[1]]
        tflite.ReshapeOptionsStartNewShapeVector(builder, len(shape))
        for s in reversed(shape):
            builder.PrependInt32(s)
        vec = builder.EndVector()
        tflite.ReshapeOptionsStart(builder)
        tflite.ReshapeOptionsAddNewShape(builder, vec)
        return O.ReshapeOptions, tflite.ReshapeOptionsEnd(builder)
    if kind == "fc":
        tflite.FullyConnectedOptionsStart(builder)
        return O.FullyConnectedOptions, tflite.FullyConnectedOptionsEnd(builder)
    if kind == "empty":
        # AddOptions / MulOptions with defaults (no fused activation): an empty table.
        builder.StartObject(0)
        return options[1], builder.EndObject()
    raise ModelError(f"unknown operator options {kind!r}")


def _int_vector(builder, values: list[int]) -> int:
    builder.StartVector(4, len(values), 4)
    for v in reversed(values):
        builder.PrependInt32(v)
    return builder.EndVector()


def _offset_vector(builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        builder.PrependUOffsetTRelative(o)
    return builder.EndVector()


def _serialise(g: _Graph, inputs: list[int], outputs: list[int]) -> bytes:
    import flatbuffers
    import tflite

    builder = flatbuffers.Builder(1 << 20)
    buffers = []
    for data in g.buffers:
        vec = None
        if data:
            builder.StartVector(1, len(data), 16)  # 16-byte aligned: the kernels read weights in place
            builder.head = builder.head - len(data)
            builder.Bytes[builder.head : builder.head + len(data)] = data
            vec = builder.EndVector()
        tflite.BufferStart(builder)
        if vec is not None:
            tflite.BufferAddData(builder, vec)
        buffers.append(tflite.BufferEnd(builder))
    tensors = []
    for name, shape, ttype, buffer in g.tensors:
        name_off = builder.CreateString(name)
        shape_off = _int_vector(builder, shape)
        tflite.TensorStart(builder)
        tflite.TensorAddShape(builder, shape_off)
        tflite.TensorAddType(builder, ttype)
        tflite.TensorAddBuffer(builder, buffer)
        tflite.TensorAddName(builder, name_off)
        tensors.append(tflite.TensorEnd(builder))
    ops = []
    for opcode_index, ins, outs, options in g.ops:
        ins_off, outs_off = _int_vector(builder, ins), _int_vector(builder, outs)
        opt_type, opt_off = _options(builder, options)
        tflite.OperatorStart(builder)
        tflite.OperatorAddOpcodeIndex(builder, opcode_index)
        tflite.OperatorAddInputs(builder, ins_off)
        tflite.OperatorAddOutputs(builder, outs_off)
        if opt_off:
            tflite.OperatorAddBuiltinOptionsType(builder, opt_type)
            tflite.OperatorAddBuiltinOptions(builder, opt_off)
        ops.append(tflite.OperatorEnd(builder))
    tensors_vec, ops_vec = _offset_vector(builder, tensors), _offset_vector(builder, ops)
    in_vec, out_vec = _int_vector(builder, inputs), _int_vector(builder, outputs)
    name = builder.CreateString("main")
    tflite.SubGraphStart(builder)
    tflite.SubGraphAddTensors(builder, tensors_vec)
    tflite.SubGraphAddInputs(builder, in_vec)
    tflite.SubGraphAddOutputs(builder, out_vec)
    tflite.SubGraphAddOperators(builder, ops_vec)
    tflite.SubGraphAddName(builder, name)
    subgraph = tflite.SubGraphEnd(builder)
    codes = []
    for code in g.opcodes:
        tflite.OperatorCodeStart(builder)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(builder, min(code, 127))
        tflite.OperatorCodeAddBuiltinCode(builder, code)
        tflite.OperatorCodeAddVersion(builder, 1)
        codes.append(tflite.OperatorCodeEnd(builder))
    codes_vec = _offset_vector(builder, codes)
    subgraphs_vec = _offset_vector(builder, [subgraph])
    buffers_vec = _offset_vector(builder, buffers)
    desc = builder.CreateString("facegate models/onnx_to_tflite.py")
    tflite.ModelStart(builder)
    tflite.ModelAddVersion(builder, 3)
    tflite.ModelAddOperatorCodes(builder, codes_vec)
    tflite.ModelAddSubgraphs(builder, subgraphs_vec)
    tflite.ModelAddDescription(builder, desc)
    tflite.ModelAddBuffers(builder, buffers_vec)
    builder.Finish(tflite.ModelEnd(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
