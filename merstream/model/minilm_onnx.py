"""A frozen BERT sentence encoder (all-MiniLM-L6-v2) as an onnxruntime graph, written from the
``model.safetensors`` and ``config.json`` an installed package ships (no torch, no transformers;
nothing copied into this repository or an export; ``text_frontends.MiniLMFrontEnd`` keeps the
serialised graph in the user's cache).

    weights = bert_weights(package_dir / "model")
    session = cpu_session(sentence_graph(weights).SerializeToString())
    vectors = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]   # [N, T] -> [N, 384]

The graph is BERT written out in ONNX operators (opset 17): word, position and token-type (0)
embeddings and their LayerNorm, ``layers`` post-LayerNorm transformer layers (separate q, k, v,
softmax attention with the padding masked out, exact GELU MLP), then the sentence-transformers
pooling of this model (modules.json: the mean of the last layer's token vectors over the attention
mask, L2-normalised). A test holds it equal to a torch copy of the model (``training/minilm.py``),
which reproduces the model's published example similarities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MerstreamError
from .onnx_writer import GraphWriter

GRAPH_VERSION = 1  # bump when the graph this module writes changes (cached graphs are keyed by it)
MASKED = -1e9  # added to attention scores of padding tokens (exp underflows to exactly 0)


@dataclass
class BertWeights:
    arrays: dict[str, np.ndarray]
    width: int
    layers: int
    heads: int
    eps: float
    max_positions: int

    def get(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def layer(self, i: int, name: str) -> np.ndarray:
        return self.arrays[f"encoder.layer.{i}.{name}"]


LAYER_TENSORS = [f"{p}.{w}" for p in ("attention.self.query", "attention.self.key", "attention.self.value",
                                       "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                                       "output.dense", "output.LayerNorm") for w in ("weight", "bias")]
EMBEDDING_TENSORS = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                     "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]


def bert_weights(model_dir: Path) -> BertWeights:
    """The encoder's float32 tensors and shape from ``model_dir`` (config.json, model.safetensors);
    a one-line error when a file is missing, unreadable, not a BERT or lacks a tensor the graph needs."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise MerstreamError(f"cannot read the sentence encoder's config.json in {model_dir}: {type(e).__name__}") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
        raise MerstreamError(f"{model_dir}/config.json does not describe a BERT encoder with GELU")
    try:
        shape = (int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"]),
                 float(cfg["layer_norm_eps"]), int(cfg["max_position_embeddings"]))
    except (KeyError, TypeError, ValueError) as e:
        raise MerstreamError(f"{model_dir}/config.json lacks a BERT setting ({e})") from None
    try:
        arrays = load_file(str(model_dir / "model.safetensors"))
    except (OSError, ValueError, SafetensorError) as e:
        first = (str(e).splitlines() or [""])[0] or type(e).__name__
        raise MerstreamError(f"cannot read the sentence encoder in {model_dir}: {first}") from None
    w = BertWeights(arrays, *shape)
    needed = EMBEDDING_TENSORS + [f"encoder.layer.{i}.{t}" for i in range(w.layers) for t in LAYER_TENSORS]
    missing = [n for n in needed if n not in arrays]
    if missing or w.width % w.heads:
        raise MerstreamError(f"{model_dir}/model.safetensors does not fit its config.json (missing {missing[:2]})")
    if arrays["embeddings.word_embeddings.weight"].shape[1] != w.width:
        raise MerstreamError(f"{model_dir}/model.safetensors: word embeddings are not {w.width} wide")
    w.arrays = {n: np.asarray(arrays[n], np.float32) for n in needed}
    return w


def _layer(g: GraphWriter, x: str, bias: str, w: BertWeights, i: int) -> str:
    d, h = w.width, w.heads

    def heads(t: str) -> str:  # [N, T, D] -> [N, H, T, dh]
        t = g.op("Reshape", [t, g.const("shape", np.array([0, 0, h, d // h], np.int64))])
        return g.op("Transpose", [t], perm=[0, 2, 1, 3])

    q, k, v = (heads(g.linear(x, w.layer(i, f"attention.self.{n}.weight"), w.layer(i, f"attention.self.{n}.bias"), f"l{i}_{n}"))
               for n in ("query", "key", "value"))
    ctx = g.attention(q, k, v, d // h, bias)
    ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), g.const("shape", np.array([0, 0, d], np.int64))])
    out = g.linear(ctx, w.layer(i, "attention.output.dense.weight"), w.layer(i, "attention.output.dense.bias"), f"l{i}_out")
    x = g.norm(g.op("Add", [x, out]), w.layer(i, "attention.output.LayerNorm.weight"),
               w.layer(i, "attention.output.LayerNorm.bias"), f"l{i}_ln1", w.eps)
    f = g.gelu(g.linear(x, w.layer(i, "intermediate.dense.weight"), w.layer(i, "intermediate.dense.bias"), f"l{i}_up"))
    f = g.linear(f, w.layer(i, "output.dense.weight"), w.layer(i, "output.dense.bias"), f"l{i}_down")
    return g.norm(g.op("Add", [x, f]), w.layer(i, "output.LayerNorm.weight"), w.layer(i, "output.LayerNorm.bias"), f"l{i}_ln2", w.eps)


def sentence_graph(w: BertWeights):
    """An ONNX model: ``input_ids`` and ``attention_mask`` [N, T] int64 -> ``sentence`` [N, width]
    float32 unit vectors (masked mean of the last layer, L2-normalised)."""
    from onnx import TensorProto, helper

    g = GraphWriter()
    t = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const("one", np.array(1, np.int64))], axis=0)
    positions = g.op("Range", [g.const("zero", np.array(0, np.int64)), t, g.const("step", np.array(1, np.int64))])
    x = g.op("Add", [g.op("Gather", [g.const("word", w.get("embeddings.word_embeddings.weight")), "input_ids"], axis=0),
                     g.op("Gather", [g.const("position", w.get("embeddings.position_embeddings.weight")), positions], axis=0)])
    x = g.op("Add", [x, g.const("type0", w.get("embeddings.token_type_embeddings.weight")[0])])
    x = g.norm(x, w.get("embeddings.LayerNorm.weight"), w.get("embeddings.LayerNorm.bias"), "ln_emb", w.eps)
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)  # [N, T]
    keep = g.op("Unsqueeze", [mask, g.const("axes", np.array([1, 2], np.int64))])  # [N, 1, 1, T]
    bias = g.op("Mul", [g.op("Sub", [g.scalar("one", 1.0), keep]), g.scalar("masked", MASKED)])
    for i in range(w.layers):
        x = _layer(g, x, bias, w, i)
    m = g.op("Unsqueeze", [mask, g.const("axes", np.array([2], np.int64))])  # [N, T, 1]
    total = g.op("ReduceSum", [g.op("Mul", [x, m]), g.const("axes", np.array([1], np.int64))], keepdims=0)
    count = g.op("Max", [g.op("ReduceSum", [m, g.const("axes", np.array([1], np.int64))], keepdims=0), g.scalar("tiny", 1e-9)])
    mean = g.op("Div", [total, count])
    length = g.op("Max", [g.op("ReduceL2", [mean], axes=[1], keepdims=1), g.scalar("eps", 1e-12)])
    g.output(g.op("Div", [mean, length]), "sentence")
    return g.model("minilm_sentence",
                   [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"]) for n in ("input_ids", "attention_mask")],
                   [helper.make_tensor_value_info("sentence", TensorProto.FLOAT, ["batch", w.width])])
