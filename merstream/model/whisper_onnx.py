"""The frozen part of a Whisper encoder as an onnxruntime graph, written from the weights of a
CTranslate2 ``model.bin`` (no torch; nothing copied into this repository or an export; the
serialised graph is kept in the user's cache by ``frontends.WhisperFrontEnd.frozen_graph``).

    weights = encoder_weights(package_dir / "model")
    session = cpu_session(encoder_graph(weights, layers=2, final_norm=False, frames=100).SerializeToString())
    states = session.run(None, {"log_mel": mel})[0]   # [N, 80, 200] -> [N, 100, 384]

The graph is Whisper's encoder written out in ONNX operators (opset 17): two 1-D convolutions with
exact (erf) GELU, the position table, ``layers`` pre-LayerNorm transformer layers (fused q|k|v,
softmax attention, GELU MLP) and, for the whole encoder, the final LayerNorm. Its output equals
faster-whisper's CTranslate2 encoder (tested). A model that tunes its last layers runs the rest here
and the tuned layers in its own exported audio graph.
"""

from __future__ import annotations

import numpy as np

from .onnx_writer import GraphWriter
from .whisper_bin import EncoderWeights

LN_EPS = 1e-5
GRAPH_VERSION = 1  # bump when the graph this module writes changes (cached graphs are keyed by it)


def _layer(g: GraphWriter, x: str, w: EncoderWeights, i: int) -> str:
    d, h = w.width, w.heads
    a = g.norm(x, w.layer(i, "self_attention/layer_norm/gamma"), w.layer(i, "self_attention/layer_norm/beta"), f"l{i}_ln1", LN_EPS)
    qkv = g.linear(a, w.layer(i, "self_attention/linear_0/weight"), w.layer(i, "self_attention/linear_0/bias"), f"l{i}_qkv")
    qkv = g.op("Reshape", [qkv, g.const("shape", np.array([0, 0, 3, h, d // h], np.int64))])
    qkv = g.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])  # [3, N, H, T, dh]
    q, k, v = (g.op("Gather", [qkv, g.const("idx", np.array(j, np.int64))], axis=0) for j in range(3))
    ctx = g.attention(q, k, v, d // h)  # [N, H, T, dh]
    ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), g.const("shape", np.array([0, 0, d], np.int64))])
    x = g.op("Add", [x, g.linear(ctx, w.layer(i, "self_attention/linear_1/weight"), w.layer(i, "self_attention/linear_1/bias"), f"l{i}_out")])
    f = g.norm(x, w.layer(i, "ffn/layer_norm/gamma"), w.layer(i, "ffn/layer_norm/beta"), f"l{i}_ln2", LN_EPS)
    f = g.gelu(g.linear(f, w.layer(i, "ffn/linear_0/weight"), w.layer(i, "ffn/linear_0/bias"), f"l{i}_up"))
    return g.op("Add", [x, g.linear(f, w.layer(i, "ffn/linear_1/weight"), w.layer(i, "ffn/linear_1/bias"), f"l{i}_down")])


def encoder_graph(w: EncoderWeights, layers: int, final_norm: bool, frames: int):
    """An ONNX model: log-Mel ``log_mel`` [N, n_mels, 2 * frames] -> ``states`` [N, frames, width]
    after the convolutions, the position table and the first ``layers`` layers (then the final
    LayerNorm when ``final_norm``)."""
    from onnx import TensorProto, helper

    if not 0 <= layers <= w.layers:
        raise ValueError(f"layers must be 0..{w.layers}")
    g = GraphWriter()
    x = g.gelu(g.op("Conv", ["log_mel", g.const("conv1_w", w.arrays["conv1/weight"]), g.const("conv1_b", w.arrays["conv1/bias"])],
                    pads=[1, 1], strides=[1]))
    x = g.gelu(g.op("Conv", [x, g.const("conv2_w", w.arrays["conv2/weight"]), g.const("conv2_b", w.arrays["conv2/bias"])],
                    pads=[1, 1], strides=[2]))
    x = g.op("Add", [g.op("Transpose", [x], perm=[0, 2, 1]), g.const("positions", w.arrays["position_encodings/encodings"][:frames])])
    for i in range(layers):
        x = _layer(g, x, w, i)
    if final_norm:
        x = g.norm(x, w.arrays["layer_norm/gamma"], w.arrays["layer_norm/beta"], "ln_final", LN_EPS)
    g.output(x, "states")
    return g.model("whisper_encoder",
                   [helper.make_tensor_value_info("log_mel", TensorProto.FLOAT, ["batch", w.n_mels, 2 * frames])],
                   [helper.make_tensor_value_info("states", TensorProto.FLOAT, ["batch", frames, w.width])])
