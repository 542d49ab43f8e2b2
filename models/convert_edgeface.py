#!/usr/bin/env python3
"""Convert the EdgeFace-XS dynamic-quantised torch checkpoint to a float ONNX model.

Run ONCE by a developer; the output (models/edgeface_xs.onnx) is committed and is what
facegate loads at run time through onnxruntime. Needs torch, timm (and torchvision, which
timm imports), onnx and onnxruntime: torch/timm/torchvision are conversion-time tools only,
never runtime dependencies of facegate.

Source facts (shared/models-src/edgeface-idiap/README.md): the network is timm's
`edgenext_x_small` + `reset_classifier(512)`, wrapped so state-dict keys read
`model.<timm key>`; every nn.Linear is stored as dynamic-quant packed params (qint8 weight,
float bias). We dequantize those weights into a plain float model and export it, so the
graph has the int8-rounded weights as floats and float activations: it differs from the
dynamic-quant torch model only by the latter's activation quantisation.

ONNX contract:
  "input"      float32 [N, 3, 112, 112], RGB, NCHW, normalised BY THE CALLER as
               (x / 255 - 0.5) / 0.5 (preprocessing stays in facegate, the graph is pure network)
  "embedding"  float32 [N, 512], raw (NOT L2-normalised)

Usage (from the repo root): python models/convert_edgeface.py [--checkpoint P] [--out P] [--arch A]
The two committed models were made with:
  python models/convert_edgeface.py                    # -> models/edgeface_xs.onnx
  python models/convert_edgeface.py --arch edgenext_xx_small \
      --checkpoint ../shared/models-src/edgeface-idiap/edgeface_xxs_q.pt --out models/edgeface_xxs.onnx
"""

from __future__ import annotations

import argparse
import collections
import copy
import hashlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import timm
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
INPUT_SIZE = 112  # EdgeFace is trained on 112x112 ArcFace-aligned crops
EMBED_DIM = 512
OPSET = 17
PACKED_SUFFIX = "._packed_params._packed_params"
DEFAULT_CHECKPOINT = REPO_ROOT / "../shared/models-src/edgeface-idiap/edgeface_xs_q.pt"
DEFAULT_OUT = REPO_ROOT / "models/edgeface_xs.onnx"


class TimmFRWrapperV2(nn.Module):
    """Mirror of the upstream wrapper; it exists so that the `model.` key prefix matches."""

    def __init__(self, arch: str, featdim: int = EMBED_DIM) -> None:
        super().__init__()
        # pretrained=False: weights come only from the checkpoint, never from a hub.
        model: Any = timm.create_model(arch, pretrained=False)
        model.reset_classifier(featdim)  # timm API: new Linear(C -> featdim) after head.norm
        self.model: nn.Module = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class FixedPositionalEncoding(nn.Module):
    """Stand-in for timm's PositionalEncodingFourier at the one spatial size we export.

    The original rebuilds its sin/cos table on every call from the (B, H, W) shape, which the
    tracer turns into ConstantOfShape/CumSum/Sin/Cos/Range nodes hanging off the dynamic batch.
    The table does not depend on the pixels, so a precomputed copy leaves the maths unchanged
    and keeps the graph plain (friendlier to int8 static quantisation and other runtimes).
    The price, a graph that only takes 112x112 input, is the contract anyway.
    """

    table: torch.Tensor

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)  # [1, C, H, W]

    def forward(self, shape: tuple[int, int, int]) -> torch.Tensor:
        # repeat (-> Tile) rather than expand: the exporter wraps a dynamic expand in extra
        # ConstantOfShape/Equal/Where shape plumbing.
        return self.table.repeat(shape[0], 1, 1, 1)


def dequantize_state_dict(packed: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Turn dynamic-quant Linear entries back into plain `.weight`/`.bias` tensors."""
    quant_prefixes = {k[: -len(PACKED_SUFFIX)] for k in packed if k.endswith(PACKED_SUFFIX)}
    out: dict[str, torch.Tensor] = {}
    for key, value in packed.items():
        prefix, _, leaf = key.rpartition(".")
        if key.endswith(PACKED_SUFFIX):
            prefix = key[: -len(PACKED_SUFFIX)]
            weight, bias = value  # (qint8 per-tensor-affine weight, float bias or None)
            out[f"{prefix}.weight"] = weight.dequantize()
            if bias is not None:
                out[f"{prefix}.bias"] = bias.detach().clone()
        elif key.endswith("._packed_params.dtype"):
            continue
        elif leaf in ("scale", "zero_point") and prefix in quant_prefixes:
            # Output quantisation params of a dynamic-quant Linear (unused by it). Only dropped
            # where such a layer owns them, so a real float param named `scale` still loads.
            continue
        else:
            out[key] = value  # convs, norms, gammas, temperatures: already float
    return out


def build_float_model(checkpoint: Path, arch: str) -> nn.Module:
    # weights_only=False: the pickle holds quantised tensors and torch.dtype objects. Fine
    # only because this is a known file from the authors' repo, converted by hand.
    with warnings.catch_warnings():  # torch's deprecation notes about quantised storages
        warnings.simplefilter("ignore", UserWarning)
        packed = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = TimmFRWrapperV2(arch)
    model.load_state_dict(dequantize_state_dict(packed), strict=True)  # every key must match
    return model.eval()


@torch.no_grad()
def with_fixed_positional_encodings(model: nn.Module) -> nn.Module:
    """Copy of `model` whose PositionalEncodingFourier modules hold their 112x112 table."""
    model = copy.deepcopy(model)
    targets = [
        n for n, m in model.named_modules() if isinstance(m, timm.models.edgenext.PositionalEncodingFourier)
    ]
    tables: dict[str, torch.Tensor] = {}
    # The table's H, W depend on where the block sits, so record them from one real forward.
    hooks = [
        model.get_submodule(n).register_forward_hook(
            lambda _m, _i, out, n=n: tables.__setitem__(n, out[:1].clone())
        )
        for n in targets
    ]
    model(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
    for h in hooks:
        h.remove()
    for n in targets:
        parent, _, child = n.rpartition(".")
        setattr(model.get_submodule(parent), child, FixedPositionalEncoding(tables[n]))
    return model


def export(model: nn.Module, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # dynamo=False: the TorchScript exporter emits opset 17 directly, while the dynamo exporter
    # (default since torch 2.9) targets opset 18 and fails to down-convert this graph.
    # TrainingMode.EVAL drops Dropout and other train-only nodes.
    torch.onnx.export(
        model,
        (torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE),),
        str(out),
        input_names=["input"],
        output_names=["embedding"],
        dynamic_axes={"input": {0: "N"}, "embedding": {0: "N"}},
        opset_version=OPSET,
        do_constant_folding=True,
        training=torch.onnx.TrainingMode.EVAL,
        dynamo=False,
    )
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    # Fail loudly if anything but standard-domain inference ops slipped into the graph.
    bad = {n.op_type for n in proto.graph.node if n.domain not in ("", "ai.onnx")}
    bad |= {n.op_type for n in proto.graph.node if n.op_type in ("Dropout", "ATen", "PythonOp")}
    if bad or [i.name for i in proto.graph.input] != ["input"]:  # weights must be initializers
        raise SystemExit(f"exported graph is not plain: ops {sorted(bad)}, inputs {proto.graph.input}")
    hist = collections.Counter(n.op_type for n in proto.graph.node)
    print("op histogram:", dict(hist.most_common()))


@torch.no_grad()
def verify(reference: nn.Module, out: Path, seed: int = 0) -> float:
    """onnxruntime vs the unmodified float torch model (so the table swap is checked too)."""
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in (1, 2, 5):  # several sizes: the batch dim is dynamic
        # Uniform in [-1, 1]: the range a normalised caller input spans.
        x = torch.rand(batch, 3, INPUT_SIZE, INPUT_SIZE, generator=gen) * 2 - 1
        (got,) = sess.run(["embedding"], {"input": x.numpy()})
        assert got.shape == (batch, EMBED_DIM), got.shape
        worst = max(worst, float(np.abs(reference(x).numpy() - got).max()))
    print(f"onnxruntime vs torch max |diff| = {worst:.3e}")
    # Entries are ~0.1 (norm ~2) and float reordering gives ~1e-6; 1e-4 means a real bug.
    if worst > 1e-4:
        raise SystemExit("onnxruntime output does not match torch")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Defaults are anchored at the repo root so the script runs from any directory.
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="dynamic-quant checkpoint")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="ONNX file to write")
    ap.add_argument("--arch", default="edgenext_x_small", help="timm architecture name")
    args = ap.parse_args()

    model = build_float_model(args.checkpoint.resolve(), args.arch)
    export(with_fixed_positional_encodings(model), args.out)
    verify(model, args.out)
    data = args.out.read_bytes()
    print(f"wrote {args.out.resolve()}\nsize   {len(data)} bytes")
    print(f"sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
