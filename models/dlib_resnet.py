"""Convert dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1.dat)
to ONNX using only numpy and the ``onnx`` package.

dlib writes a network as nested objects: every wrapper (add_layer / add_tag_layer /
add_skip_layer) first writes its version and then its *sub*network, and only after
that its own layer details.  The file is therefore: all wrapper versions top-down,
the input layer, then all layer details bottom-up.  Tag and skip wrappers write just
``int 1`` and nothing else, so the topology cannot be recovered from the bytes; we
parse against the known ``anet_type`` from dlib's dnn_face_recognition_ex.cpp and
use the version strings of the layer details as a consistency check.

Usage: python -m models.dlib_resnet OUT.onnx
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

try:  # works both as ``models.dlib_resnet`` and as a script inside models/
    from .dlib_serialize import DlibFormatError, DlibReader, float32
except ImportError:  # pragma: no cover
    from dlib_serialize import DlibFormatError, DlibReader, float32  # type: ignore

OPSET = 17
IR_VERSION = 8  # the IR version that introduced opset 17; loadable by any recent onnxruntime
CHIP_SIZE = 150


# --------------------------------------------------------------------------------------
# Architecture (top -> bottom, exactly as the C++ template nesting reads)


@dataclass(frozen=True)
class Spec:
    kind: str  # con | affine | relu | max_pool | avg_pool | add_prev | tag | skip | fc
    num: int = 0  # filters for con/fc, tag id for tag/skip/add_prev
    kernel: int = 0  # square window; 0 = whole input (avg_pool_everything)
    stride: int = 1


def _block(n: int, stride: int) -> list[Spec]:
    # block = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
    return [Spec("affine"), Spec("con", n, 3, 1), Spec("relu"), Spec("affine"), Spec("con", n, 3, stride)]


def _ares(n: int) -> list[Spec]:
    # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return [Spec("relu"), Spec("add_prev", 1), *_block(n, 1), Spec("tag", 1)]


def _ares_down(n: int) -> list[Spec]:
    # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return [Spec("relu"), Spec("add_prev", 2), Spec("avg_pool", 0, 2, 2), Spec("skip", 1),
            Spec("tag", 2), *_block(n, 2), Spec("tag", 1)]


def face_resnet_spec() -> list[Spec]:
    """Layers below loss_metric, top first; the input layer is implicit at the bottom."""
    levels = (_ares_down(256)                                      # alevel0
              + _ares(256) + _ares(256) + _ares_down(256)          # alevel1
              + _ares(128) + _ares(128) + _ares_down(128)          # alevel2
              + _ares(64) + _ares(64) + _ares(64) + _ares_down(64)  # alevel3
              + _ares(32) + _ares(32) + _ares(32))                 # alevel4
    return [Spec("fc", 128), Spec("avg_pool", 0, 0, 1), *levels,
            Spec("max_pool", 0, 3, 2), Spec("relu"), Spec("affine"), Spec("con", 32, 7, 2)]


# --------------------------------------------------------------------------------------
# Parsing


@dataclass
class Layer:
    spec: Spec
    pad: int = 0
    disabled: bool = False
    weight: np.ndarray | None = None  # con: (out,in,kh,kw); fc: (in,out)
    bias: np.ndarray | None = None
    gamma: np.ndarray | None = None  # affine: per channel (conv mode) or (k,nr,nc) (fc mode)
    beta: np.ndarray | None = None
    conv_mode: bool = True
    fused_relu: bool = False  # con_6 can carry a fused relu


@dataclass
class DlibNet:
    mean_rgb: tuple[float, float, float]
    size: int
    layers: list[Layer] = field(default_factory=list)  # bottom -> top


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise DlibFormatError(msg)


def _skip_multipliers(r: DlibReader) -> None:
    # learning-rate / weight-decay multipliers (4 doubles): training-only state
    for _ in range(4):
        r.read_float()


def _read_con(r: DlibReader, spec: Spec) -> Layer:
    version = r.expect_str("con_4", "con_5", "con_6")
    params = r.read_tensor().ravel()
    num_filters, nr, nc, sy, sx, pad_y, pad_x = (r.read_int() for _ in range(7))
    _check((num_filters, nr, nc, sy, sx) == (spec.num, spec.kernel, spec.kernel, spec.stride, spec.stride),
           f"con_ hyper-parameters {num_filters, nr, nc, sy, sx} do not match {spec}")
    # dlib default padding: kernel/2 for stride 1, else 0 -- but trust the stored value
    _check(pad_y == pad_x, "asymmetric con_ padding is not supported")
    filters, biases = r.read_alias_tensor(), r.read_alias_tensor()
    _skip_multipliers(r)
    use_bias = r.read_bool() if version in ("con_5", "con_6") else True
    use_relu = r.read_bool() if version == "con_6" else False
    # filters and biases are views into the flat params tensor, filters first
    weight = params[: filters.size].reshape(filters.shape)
    bias = params[filters.size : filters.size + num_filters] if use_bias else np.zeros(num_filters, np.float32)
    _check(not use_bias or biases.size == num_filters, "con_ bias size mismatch")
    return Layer(spec, pad=pad_y, weight=weight, bias=bias.copy(), fused_relu=use_relu)


def _read_bn_as_affine(r: DlibReader, spec: Spec, version: str) -> Layer:
    # affine_ accepts a serialized bn_ and freezes it using its running statistics
    params = r.read_tensor().ravel()
    gamma_t, _beta_t = r.read_alias_tensor(), r.read_alias_tensor()
    for _ in range(2):  # batch means / invstds of the last training step: unused
        r.read_tensor()
    running_mean, running_var = r.read_tensor().ravel(), r.read_tensor().ravel()
    r.read_int(), r.read_int()  # num_updates, running_stats_window_size
    _skip_multipliers(r)
    eps = r.read_float()
    g = params[: gamma_t.size] / np.sqrt(running_var + eps)
    b = params[gamma_t.size : 2 * gamma_t.size] - g * running_mean
    return Layer(spec, gamma=g.astype(np.float32), beta=b.astype(np.float32), conv_mode=version == "bn_con2")


def _read_affine(r: DlibReader, spec: Spec) -> Layer:
    version = r.expect_str("affine_", "affine_2", "bn_con2", "bn_fc2")
    if version.startswith("bn_"):
        return _read_bn_as_affine(r, spec, version)
    params = r.read_tensor().ravel()
    gamma_t, _beta_t = r.read_alias_tensor(), r.read_alias_tensor()
    conv_mode = r.read_int() == 0  # layer_mode: CONV_MODE=0, FC_MODE=1
    disabled = r.read_bool() if version == "affine_2" else False
    n = gamma_t.size
    return Layer(spec, disabled=disabled, gamma=params[:n].copy(), beta=params[n : 2 * n].copy(),
                 conv_mode=conv_mode)


def _read_pool(r: DlibReader, spec: Spec) -> Layer:
    r.expect_str(f"{spec.kind}_2")
    nr, nc, sy, sx, pad_y, pad_x = (r.read_int() for _ in range(6))
    _check((nr, nc, sy, sx) == (spec.kernel, spec.kernel, spec.stride, spec.stride),
           f"{spec.kind} hyper-parameters {nr, nc, sy, sx} do not match {spec}")
    _check(pad_y == pad_x, "asymmetric pool padding is not supported")
    return Layer(spec, pad=pad_y)


def _read_fc(r: DlibReader, spec: Spec) -> Layer:
    version = r.expect_str("fc_2", "fc_3")
    num_outputs, num_inputs = r.read_int(), r.read_int()
    _check(num_outputs == spec.num, f"fc_ has {num_outputs} outputs, expected {spec.num}")
    params = r.read_tensor().ravel()
    weights, _biases = r.read_alias_tensor(), r.read_alias_tensor()
    has_bias = r.read_int() == 0  # fc_bias_mode: FC_HAS_BIAS=0, FC_NO_BIAS=1
    _skip_multipliers(r)
    if version == "fc_3":
        has_bias = r.read_bool() and has_bias
    # output = input(N, num_inputs) @ W(num_inputs, num_outputs), bias row after W
    w = params[: weights.size].reshape(num_inputs, num_outputs)
    b = params[weights.size : weights.size + num_outputs] if has_bias else None
    return Layer(spec, weight=w.copy(), bias=None if b is None else b.copy())


def _read_details(r: DlibReader, spec: Spec) -> Layer:
    if spec.kind == "con":
        return _read_con(r, spec)
    if spec.kind == "affine":
        return _read_affine(r, spec)
    if spec.kind in ("max_pool", "avg_pool"):
        return _read_pool(r, spec)
    if spec.kind == "fc":
        return _read_fc(r, spec)
    if spec.kind == "relu":
        version = r.expect_str("relu_", "relu_2")
        return Layer(spec, disabled=r.read_bool() if version == "relu_2" else False)
    if spec.kind == "add_prev":
        r.expect_str("add_prev_")
        return Layer(spec)
    raise AssertionError(spec.kind)


def parse_dlib_resnet(data: bytes) -> DlibNet:
    """Parse a serialized ``anet_type`` (loss_metric ... input_rgb_image_sized<150>)."""
    r = DlibReader(data)
    specs = face_resnet_spec()
    r.expect_int(1, "add_loss_layer")
    if r.expect_str("loss_metric_", "loss_metric_2") == "loss_metric_2":
        r.read_float(), r.read_float()  # margin, distance threshold: training only
    # Wrapper versions, top-down.  The lowest add_layer (directly on the input layer)
    # is a different C++ specialisation with its own version numbering.
    versions = []
    for i, spec in enumerate(specs):
        v = r.read_int()
        ok = {1} if spec.kind in ("tag", "skip") else ({2, 3} if i == len(specs) - 1 else {1, 2})
        _check(v in ok, f"layer {i} ({spec.kind}): unexpected wrapper version {v}")
        versions.append(v)
    r.expect_str("input_rgb_image_sized")
    mean_rgb = (float32(r.read_float()), float32(r.read_float()), float32(r.read_float()))
    nr, nc = r.read_int(), r.read_int()
    _check(nr == nc == CHIP_SIZE, f"input is {nr}x{nc}, expected {CHIP_SIZE}")
    net = DlibNet(mean_rgb=mean_rgb, size=nr)
    # Layer details plus training-time state, bottom-up.
    for i in reversed(range(len(specs))):
        spec = specs[i]
        if spec.kind in ("tag", "skip"):
            net.layers.append(Layer(spec))
            continue
        net.layers.append(_read_details(r, spec))
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, ..._disabled
            r.read_bool()
        r.read_tensor(), r.read_tensor()  # x_grad, cached_output
        if i == len(specs) - 1:
            r.read_tensor()  # grad_final
            if versions[i] >= 3:
                r.read_int()  # _sample_expansion_factor
        elif versions[i] >= 2:
            r.read_tensor()  # params_grad
    _check(r.at_end(), f"{len(data) - r.pos} trailing bytes after the network")
    return net


# --------------------------------------------------------------------------------------
# ONNX emission

Shape = tuple[int, int, int]  # (C, H, W) -- batch stays dynamic


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, prefix: str, value: np.ndarray) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: object) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _pool_out(size: int, kernel: int, stride: int, pad: int) -> int:
    # dlib (and ONNX with floor rounding): 1 + (n + 2p - k) / s
    return 1 + (size + 2 * pad - kernel) // stride


def _pad_to(g: _GraphBuilder, x: str, shape: Shape, target: Shape) -> str:
    # dlib's tt::add(dest, a, b) with mismatched shapes aligns both tensors at index 0
    # in every dimension and treats missing elements as 0, so pad at the END only.
    if shape == target:
        return x
    ends = [0] + [t - s for s, t in zip(shape, target, strict=True)]
    pads = np.array([0, 0, 0, 0] + ends, dtype=np.int64)
    return g.op("Pad", [x, g.const("pads", pads)], mode="constant")


def _emit_layers(g: _GraphBuilder, net: DlibNet, x: str) -> str:
    shape: Shape = (3, net.size, net.size)
    tags: dict[int, tuple[str, Shape]] = {}
    pending_conv: tuple[np.ndarray, np.ndarray, Layer] | None = None  # delay to fold affine

    def flush() -> None:
        nonlocal x, pending_conv
        if pending_conv is not None:
            w, b, lay = pending_conv
            x = g.op("Conv", [x, g.const("W", w), g.const("B", b)], kernel_shape=list(w.shape[2:]),
                     strides=[lay.spec.stride] * 2, pads=[lay.pad] * 4)
            if lay.fused_relu:
                x = g.op("Relu", [x])
            pending_conv = None

    for lay in net.layers:
        s = lay.spec
        if s.kind == "affine" and pending_conv is not None and lay.conv_mode and not pending_conv[2].fused_relu:
            # affine right after a conv is a per-channel scale+shift: fold it into the conv
            if not lay.disabled:
                w, b, conv = pending_conv
                pending_conv = (w * lay.gamma[:, None, None, None], b * lay.gamma + lay.beta, conv)
            continue
        flush()
        if s.kind == "con":
            _check(lay.weight.shape[1] == shape[0], f"con_ expects {lay.weight.shape[1]} input channels")
            pending_conv = (lay.weight, lay.bias, lay)
            hw = _pool_out(shape[1], s.kernel, s.stride, lay.pad)
            shape = (s.num, hw, hw)
        elif s.kind == "affine" and not lay.disabled:
            bshape = (1, -1, 1, 1) if lay.conv_mode else (1, *shape)
            x = g.op("Mul", [x, g.const("gamma", lay.gamma.reshape(bshape))])
            x = g.op("Add", [x, g.const("beta", lay.beta.reshape(bshape))])
        elif s.kind == "relu" and not lay.disabled:
            x = g.op("Relu", [x])
        elif s.kind in ("max_pool", "avg_pool") and s.kernel == 0:
            x = g.op("GlobalAveragePool" if s.kind == "avg_pool" else "GlobalMaxPool", [x])
            shape = (shape[0], 1, 1)
        elif s.kind in ("max_pool", "avg_pool"):
            # dlib averages over the clipped window, i.e. count_include_pad=0 (ONNX default)
            x = g.op("MaxPool" if s.kind == "max_pool" else "AveragePool", [x], kernel_shape=[s.kernel] * 2,
                     strides=[s.stride] * 2, pads=[lay.pad] * 4)
            hw = _pool_out(shape[1], s.kernel, s.stride, lay.pad)
            shape = (shape[0], hw, hw)
        elif s.kind == "tag":
            tags[s.num] = (x, shape)
        elif s.kind == "skip":
            x, shape = tags[s.num]
        elif s.kind == "add_prev":
            other, oshape = tags[s.num]
            target: Shape = tuple(max(a, b) for a, b in zip(shape, oshape, strict=True))  # type: ignore[assignment]
            x = g.op("Add", [_pad_to(g, x, shape, target), _pad_to(g, other, oshape, target)])
            shape = target
        elif s.kind == "fc":
            x = g.op("Flatten", [x], axis=1)  # dlib flattens k,nr,nc row-major, same as NCHW
            _check(lay.weight.shape[0] == int(np.prod(shape)), "fc_ input size mismatch")
            x = g.op("MatMul", [x, g.const("fc_W", lay.weight)])
            if lay.bias is not None:
                x = g.op("Add", [x, g.const("fc_B", lay.bias)])
            shape = (lay.weight.shape[1], 1, 1)
    flush()
    return x


def build_onnx_model(net: DlibNet) -> onnx.ModelProto:
    g = _GraphBuilder()
    # input_rgb_image_sized::to_tensor: (pixel - avg) / 256 per RGB channel.  Dividing
    # by 256 is exact in float32, so Sub then Mul(1/256) is bit-identical to dlib.
    mean = np.array(net.mean_rgb, dtype=np.float32).reshape(1, 3, 1, 1)
    x = g.op("Sub", ["input", g.const("mean_rgb", mean)])
    x = g.op("Mul", [x, g.const("inv_256", np.array(1.0 / 256.0, dtype=np.float32))])
    out = _emit_layers(g, net, x)
    _check(g.nodes[-1].output[0] == out, "the descriptor must be the last node's output")
    g.nodes[-1].output[0] = g.nodes[-1].name = "embedding"  # nothing else consumes it
    graph = helper.make_graph(
        g.nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, net.size, net.size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 128])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="facegate.models.dlib_resnet")
    model.ir_version = IR_VERSION
    model.doc_string = ("dlib face descriptor (raw, not re-normalised). Input: float32 RGB 0..255, "
                        "NCHW, 150x150 chip aligned like dlib.get_face_chip(size=150, padding=0.25).")
    onnx.checker.check_model(model, full_check=True)
    return model


def build_dlib_resnet_onnx(dat_path: Path, out_path: Path) -> None:
    net = parse_dlib_resnet(Path(dat_path).read_bytes())
    model = build_onnx_model(net)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(out_path))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m models.dlib_resnet OUT.onnx", file=sys.stderr)
        return 2
    import face_recognition_models  # only needed to locate the shipped weights

    src = Path(face_recognition_models.face_recognition_model_location())
    out = Path(args[0])
    build_dlib_resnet_onnx(src, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"{digest}  {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
