"""Export the embedded default model's checkpoint to the ONNX graphs shipped beside it, so that a
fresh install scores without exporting (and without torch):

    python -m export.embedded [--model merstream/assets/merstream-small-v4]

``training.build_default_model`` runs this after each build; the parity check is the usual one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from merstream.errors import MerstreamError
from merstream.model_card import card_for_checkpoint
from merstream.models import DEFAULT_MODEL_DIR

from .onnx_export import ExportResult, export_model


def export_embedded(model_dir: Path = DEFAULT_MODEL_DIR, on_step=None) -> ExportResult:
    from merstream.model.checkpoint import load_checkpoint

    model_dir = Path(model_dir)
    model = load_checkpoint(model_dir)
    return export_model(model, model_dir / "onnx", precision="fp32", check=True, source=f"{model_dir.name}/model.safetensors",
                        card=card_for_checkpoint(model_dir).to_json(), on_step=on_step)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="checkpoint directory (default: the embedded model)")
    args = ap.parse_args(argv)
    try:
        r = export_embedded(args.model, on_step=lambda s: print(f"  {s}", file=sys.stderr))
    except MerstreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = sum(g.size_bytes for g in r.graphs) / 1e6
    print(f"{r.directory}: {len(r.graphs)} graphs, {size:.1f} MB, parity worst diff {r.parity.worst.max_abs:.2e} ({r.parity.worst.output}) ({r.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
