"""ONNX export of merstream models: towers, label encoder and head, with parity checks.

    from export import export_model
    result = export_model(model, "out/onnx", precision="fp32", check=True)

See ``export/onnx_export.py`` (graphs, precisions), ``export/parity.py`` (checks) and
``merstream/onnx_manifest.py`` (the directory format read by ``merstream.onnx_scorer``).
"""

from .onnx_export import DEFAULT_OPSET, ExportResult, export_model, graph_names
from .parity import ParityReport, PrecisionReport, check_parity, compare_scores
from .reference import ReferenceSet, random_reference, reference_from_media

__all__ = [
    "DEFAULT_OPSET", "ExportResult", "export_model", "graph_names", "ParityReport", "PrecisionReport",
    "check_parity", "compare_scores", "ReferenceSet", "random_reference", "reference_from_media",
]
