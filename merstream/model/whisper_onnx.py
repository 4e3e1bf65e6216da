"""The frozen part of a Whisper encoder as an onnxruntime graph, written from the weights of a
CTranslate2 ``model.bin`` (no torch; nothing copied into this repository or an export; the
serialised graph is kept in the user's cache by ``frontends.WhisperFrontEnd.frozen_graph``).

    weights = encoder_weights(package_dir / "model")
    session = encoder_session(encoder_graph(weights, layers=2, final_norm=False, frames=100).SerializeToString())
    states = session.run(None, {"log_mel": mel})[0]   # [N, 80, 200] -> [N, 100, 384]

The graph is Whisper's encoder written out in ONNX operators (opset 17): two 1-D convolutions with
exact (erf) GELU, the position table, ``layers`` pre-LayerNorm transformer layers (fused q|k|v,
softmax attention, GELU MLP) and, for the whole encoder, the final LayerNorm. Its output equals
faster-whisper's CTranslate2 encoder (tested). A model that tunes its last layers runs the rest here
and the tuned layers in its own exported audio graph.
"""

from __future__ import annotations

import math

import numpy as np

from .whisper_bin import EncoderWeights

OPSET = 17
LN_EPS = 1e-5
GRAPH_VERSION = 1  # bump when the graph this module writes changes (cached graphs are keyed by it)


class _Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, stem: str) -> str:
        self.n += 1
        return f"{stem}_{self.n}"

    def const(self, stem: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.array(value, order="C"), name))  # (ascontiguousarray makes 0-d 1-d)
        return name

    def op(self, kind: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def gelu(self, x: str) -> str:  # 0.5 x (1 + erf(x / sqrt 2)), as Whisper's (and CTranslate2's) GELU
        e = self.op("Erf", [self.op("Mul", [x, self.const("inv_sqrt2", np.array(1 / math.sqrt(2), np.float32))])])
        return self.op("Mul", [self.op("Mul", [x, self.const("half", np.array(0.5, np.float32))]),
                               self.op("Add", [e, self.const("one", np.array(1.0, np.float32))])])

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, stem: str) -> str:
        return self.op("Add", [self.op("MatMul", [x, self.const(stem + "_w", w.T)]), self.const(stem + "_b", b)])

    def norm(self, x: str, gamma: np.ndarray, beta: np.ndarray, stem: str) -> str:
        return self.op("LayerNormalization", [x, self.const(stem + "_g", gamma), self.const(stem + "_b", beta)],
                       axis=-1, epsilon=LN_EPS)


def _layer(g: _Graph, x: str, w: EncoderWeights, i: int) -> str:
    d, h = w.width, w.heads
    a = g.norm(x, w.layer(i, "self_attention/layer_norm/gamma"), w.layer(i, "self_attention/layer_norm/beta"), f"l{i}_ln1")
    qkv = g.linear(a, w.layer(i, "self_attention/linear_0/weight"), w.layer(i, "self_attention/linear_0/bias"), f"l{i}_qkv")
    qkv = g.op("Reshape", [qkv, g.const("shape", np.array([0, 0, 3, h, d // h], np.int64))])
    qkv = g.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])  # [3, N, H, T, dh]
    q, k, v = (g.op("Gather", [qkv, g.const("idx", np.array(j, np.int64))], axis=0) for j in range(3))
    scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                          g.const("scale", np.array(1 / math.sqrt(d // h), np.float32))])
    ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])  # [N, H, T, dh]
    ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), g.const("shape", np.array([0, 0, d], np.int64))])
    x = g.op("Add", [x, g.linear(ctx, w.layer(i, "self_attention/linear_1/weight"), w.layer(i, "self_attention/linear_1/bias"), f"l{i}_out")])
    f = g.norm(x, w.layer(i, "ffn/layer_norm/gamma"), w.layer(i, "ffn/layer_norm/beta"), f"l{i}_ln2")
    f = g.gelu(g.linear(f, w.layer(i, "ffn/linear_0/weight"), w.layer(i, "ffn/linear_0/bias"), f"l{i}_up"))
    return g.op("Add", [x, g.linear(f, w.layer(i, "ffn/linear_1/weight"), w.layer(i, "ffn/linear_1/bias"), f"l{i}_down")])


def encoder_graph(w: EncoderWeights, layers: int, final_norm: bool, frames: int):
    """An ONNX model: log-Mel ``log_mel`` [N, n_mels, 2 * frames] -> ``states`` [N, frames, width]
    after the convolutions, the position table and the first ``layers`` layers (then the final
    LayerNorm when ``final_norm``)."""
    from onnx import TensorProto, helper

    if not 0 <= layers <= w.layers:
        raise ValueError(f"layers must be 0..{w.layers}")
    g = _Graph()
    x = g.gelu(g.op("Conv", ["log_mel", g.const("conv1_w", w.arrays["conv1/weight"]), g.const("conv1_b", w.arrays["conv1/bias"])],
                    pads=[1, 1], strides=[1]))
    x = g.gelu(g.op("Conv", [x, g.const("conv2_w", w.arrays["conv2/weight"]), g.const("conv2_b", w.arrays["conv2/bias"])],
                    pads=[1, 1], strides=[2]))
    x = g.op("Add", [g.op("Transpose", [x], perm=[0, 2, 1]), g.const("positions", w.arrays["position_encodings/encodings"][:frames])])
    for i in range(layers):
        x = _layer(g, x, w, i)
    if final_norm:
        x = g.norm(x, w.arrays["layer_norm/gamma"], w.arrays["layer_norm/beta"], "ln_final")
    g.nodes.append(helper.make_node("Identity", [x], ["states"]))
    graph = helper.make_graph(
        g.nodes, "whisper_encoder",
        [helper.make_tensor_value_info("log_mel", TensorProto.FLOAT, ["batch", w.n_mels, 2 * frames])],
        [helper.make_tensor_value_info("states", TensorProto.FLOAT, ["batch", frames, w.width])], g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="merstream")


def encoder_session(model: bytes, threads: int | None = None):
    """An onnxruntime CPU session of a serialised :func:`encoder_graph`."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # ASR runs beside it
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
