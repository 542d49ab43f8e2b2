"""Inference backends behind one small interface.

ONNX Runtime runs every model. TFLite (ai-edge-litert, or the older tflite-runtime) is optional
and runs the models that exist as .tflite: the MediaPipe detector and FaceMesh (shipped as
TFLite) and MiniFASNet (converted at build time by models/onnx_to_tflite.py). Stages never
import a runtime directly: they get a `Session` from `open_session`, and `resolve()` picks the
model file and backend for a role under `[models] backend`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.errors import BackendError, ModelError

BACKENDS = ("onnxruntime", "tflite")
# `[models] backend = "auto"` runs these roles on TFLite when it is installed: XNNPACK on one
# x86 core (bench/backends.py) measured FaceMesh 1.6 vs 5.3 ms and MiniFASNet 1.3 vs 3.4 ms
# against ONNX Runtime, with the same outputs (<= 3e-6). The detector is even (4.2 vs 4.2 ms)
# and stays on ONNX Runtime; embedders exist only as ONNX.
AUTO_TFLITE_ROLES = frozenset({"landmarks", "liveness"})


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    shape: tuple[int | str | None, ...]
    dtype: str


class Session(Protocol):
    """What every stage needs from a model: its input spec and a forward pass."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


class OnnxSession:
    """ONNX Runtime on the CPU; thread count fixed so stages don't fight over cores."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self._sess = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped exceptions
            raise ModelError(f"{path}: ONNX Runtime cannot load this model: {exc}") from exc
        self.inputs = tuple(
            TensorSpec(i.name, tuple(i.shape), i.type) for i in self._sess.get_inputs()
        )
        self.outputs = tuple(
            TensorSpec(o.name, tuple(o.shape), o.type) for o in self._sess.get_outputs()
        )

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._sess.run(None, feeds)


def _tflite_interpreter_class() -> type:
    # ai-edge-litert is the maintained successor; tflite-runtime 2.14 still works on numpy<2.
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(module).Interpreter
        except ImportError:
            continue
    raise BackendError(
        "backend 'tflite' needs ai-edge-litert or tflite-runtime: pip install ai-edge-litert"
    )


@functools.cache
def tflite_available() -> bool:
    try:
        _tflite_interpreter_class()
    except BackendError:
        return False
    return True


def resolve(backend: str, role: str, name: str, records: Mapping[str, object]) -> tuple[str, str]:
    """(model name, backend) for the model `name` (its ONNX manifest name) in `role`.

    The TFLite twin is `<name>_tflite` in the manifest. "tflite" uses it wherever one exists
    (and fails loudly when TFLite is not installed); "auto" uses it for AUTO_TFLITE_ROLES when
    TFLite is installed; everything else runs on ONNX Runtime.
    """
    twin = f"{name}_tflite"
    if twin in records and (
        backend == "tflite" or (backend == "auto" and role in AUTO_TFLITE_ROLES and tflite_available())
    ):
        return twin, "tflite"
    return name, "onnxruntime"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Drop the C++ runtime's one-time "INFO: Created TensorFlow Lite XNNPACK delegate" line,
    which it writes straight to file descriptor 2; anything else written meanwhile is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not line.startswith("INFO: Created TensorFlow Lite"):
                    sys.stderr.write(line)


class TFLiteSession:
    """TFLite interpreter; takes NCHW feeds like ONNX and transposes for the NHWC model."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        interpreter_cls = _tflite_interpreter_class()
        try:
            with _quiet_stderr():
                self._interp = interpreter_cls(model_path=str(path), num_threads=max(1, threads))
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: TFLite cannot load this model: {exc}") from exc
        ins = self._interp.get_input_details()
        outs = self._interp.get_output_details()
        self._in_index = [d["index"] for d in ins]
        self._out_index = [d["index"] for d in outs]
        # Present the NHWC input as NCHW so callers are backend-agnostic.
        self.inputs = tuple(
            TensorSpec(
                d["name"],
                (int(d["shape"][0]), int(d["shape"][3]), int(d["shape"][1]), int(d["shape"][2])),
                "tensor(float)",
            )
            for d in ins
        )
        self.outputs = tuple(
            TensorSpec(d["name"], tuple(int(s) for s in d["shape"]), "tensor(float)") for d in outs
        )

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        for spec, index in zip(self.inputs, self._in_index, strict=True):
            nhwc = np.ascontiguousarray(feeds[spec.name].transpose(0, 2, 3, 1))
            self._interp.set_tensor(index, nhwc)
        self._interp.invoke()
        return [self._interp.get_tensor(i).copy() for i in self._out_index]


def open_session(path: Path, backend: str = "onnxruntime", threads: int = 1) -> Session:
    """A session for a model file; `backend` "onnxruntime" or "tflite" (see `resolve`)."""
    if backend == "onnxruntime":
        return OnnxSession(path, threads)
    if backend == "tflite":
        return TFLiteSession(path, threads)
    raise BackendError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
