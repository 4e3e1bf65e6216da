"""A small writer of ONNX graphs from numpy weights (opset 17), shared by the frozen pretrained
encoders that run in onnxruntime from an installed package's files (``whisper_onnx``, ``minilm_onnx``).

    g = GraphWriter()
    y = g.gelu(g.linear("x", w, b, "up"))
    model = g.model("name", inputs, outputs)
"""

from __future__ import annotations

import math

import numpy as np

OPSET = 17


class GraphWriter:
    """Nodes and initialisers of one graph; every name it makes is unique."""

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

    def scalar(self, stem: str, value: float) -> str:
        return self.const(stem, np.array(value, np.float32))

    def gelu(self, x: str) -> str:
        """Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), as Whisper's, CTranslate2's and BERT's."""
        e = self.op("Erf", [self.op("Mul", [x, self.scalar("inv_sqrt2", 1 / math.sqrt(2))])])
        return self.op("Mul", [self.op("Mul", [x, self.scalar("half", 0.5)]), self.op("Add", [e, self.scalar("one", 1.0)])])

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, stem: str) -> str:
        """x @ w.T + b for a [out, in] weight (torch / CTranslate2 layout)."""
        return self.op("Add", [self.op("MatMul", [x, self.const(stem + "_w", np.ascontiguousarray(w.T))]), self.const(stem + "_b", b)])

    def norm(self, x: str, gamma: np.ndarray, beta: np.ndarray, stem: str, eps: float) -> str:
        return self.op("LayerNormalization", [x, self.const(stem + "_g", gamma), self.const(stem + "_b", beta)],
                       axis=-1, epsilon=eps)

    def attention(self, q: str, k: str, v: str, heads_width: int, bias: str | None = None) -> str:
        """Softmax attention of [N, H, T, dh] queries, keys and values (``bias`` added to the scores,
        broadcast) -> [N, H, T, dh]."""
        scores = self.op("Mul", [self.op("MatMul", [q, self.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                                 self.scalar("scale", 1 / math.sqrt(heads_width))])
        if bias is not None:
            scores = self.op("Add", [scores, bias])
        return self.op("MatMul", [self.op("Softmax", [scores], axis=-1), v])

    def output(self, x: str, name: str) -> None:
        from onnx import helper

        self.nodes.append(helper.make_node("Identity", [x], [name]))

    def model(self, graph_name: str, inputs: list, outputs: list):
        from onnx import helper

        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="merstream")


def cpu_session(model, threads: int | None = None):
    """An onnxruntime CPU session of a serialised graph (bytes, or the path of a .onnx file; no
    busy-waiting: ASR runs beside it)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(model) if not isinstance(model, bytes) else model, opts, providers=["CPUExecutionProvider"])
