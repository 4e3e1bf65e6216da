"""A batch's index.html: one row per input with its status, length, share of time per top emotion
and a link to its report (a failed input's .partial timeline gets its report here)."""

from __future__ import annotations

import html
from pathlib import Path

from .atomic import replaced_whole
from .errors import MerstreamError
from .report import ASSETS, colours, top_shares, write_report
from .timeline_file import read_timeline


def _shares_bar(shares: list[tuple[str | None, float]], col: dict[str, str]) -> str:
    x, parts = 0.0, []
    for lab, share in shares:
        fill = col.get(lab, "#ddd") if lab else "#ddd"
        parts.append(f'<rect x="{x:.2f}" y="0" width="{share * 200:.2f}" height="14" fill="{fill}">'
                     f'<title>{html.escape(lab or "no modality")} {share * 100:.0f} %</title></rect>')
        x += share * 200
    return f'<svg width="200" height="14" viewBox="0 0 200 14">{"".join(parts)}</svg>'


def write_index(out_dir: Path, files: list[Path], outcomes) -> Path:
    """Write ``out_dir/index.html`` for a batch run with --report; returns its path."""
    by_path = {str(o.path): o for o in outcomes}
    rows = []
    for f in files:
        o = by_path.get(str(f))
        status = "not run" if o is None else "ok" if o.ok else f"failed: {o.error}"
        timeline = next((p for p in (out_dir / f"{f.stem}.jsonl", out_dir / f"{f.stem}.partial.jsonl")
                         if p.exists() and (o is None or o.ok) == (".partial" not in p.suffixes)), None)
        cells = ["", "", ""]
        if timeline is not None:
            try:
                page = timeline.with_suffix(".html")
                if not page.exists():  # a failed input: the report of what was scored before the error
                    page, _ = write_report(timeline, f)
                tl = read_timeline(timeline)
                shares = top_shares(tl)
                top = ", ".join(f"{lab} {s * 100:.0f} %" for lab, s in shares[:3] if lab)
                cells = [f'<a href="{html.escape(page.name, quote=True)}">{html.escape(page.name)}</a>',
                         f"{len(tl.windows)} windows, {tl.covered:.1f} s",
                         f"{_shares_bar(shares, colours(tl.labels))} {html.escape(top)}"]
            except MerstreamError as e:
                status += f" (no report: {e})"
        rows.append(f"<tr><td>{html.escape(f.name)}</td><td>{html.escape(status)}</td>"
                    f"<td>{cells[0]}</td><td>{cells[1]}</td><td>{cells[2]}</td></tr>")
    css = (ASSETS / "report.css").read_text(encoding="utf-8")
    text = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>merstream batch: {len(files)} files</title>
<style>{css}</style></head><body>
<h1>merstream batch: {len(files)} files</h1>
<table class="summary" id="index"><tr><th>input</th><th>status</th><th>report</th><th>windows</th><th>share of time as the top emotion</th></tr>
{"".join(rows)}</table></body></html>
"""
    path = out_dir / "index.html"
    with replaced_whole(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
