"""The HTML report of a timeline: one self-contained page with the media player, the windows as
stacked score columns (top label, modalities L/V/A, transcript words), and a summary.

Nothing outside the page is fetched: the style and the small script in ``assets/report`` are inlined,
media up to :data:`EMBED_LIMIT` bytes is embedded as a data URI and larger media is linked relative
to the page. Clicking a window seeks the player to the window's start; playing moves a cursor.
"""

from __future__ import annotations

import base64
import html
import json
import os
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import replaced_whole
from .errors import MerstreamError
from .timeline_file import Timeline, read_timeline, scored

ASSETS = Path(__file__).resolve().parent / "assets" / "report"
EMBED_LIMIT = 20 * 1024 * 1024  # media up to this size goes into the page
MISMATCH_S = 0.5  # a media file whose length differs from a complete timeline's by more is another file
MIN_COLUMN_PX = 56  # narrowest window column
TRACK_PX = 1040  # a short clip's timeline fills about this width
BAR_H = 120  # height of the score columns (px, the SVG's viewBox height)

# emotion names get colours people expect; other labels take the palette in order
NAMED_COLOURS = {
    "neutral": "#9e9e9e", "happy": "#f2b705", "joy": "#f2b705", "sad": "#3b73c4", "sadness": "#3b73c4",
    "angry": "#d7301f", "anger": "#d7301f", "fear": "#7b4fa8", "disgust": "#4e9a3a", "surprise": "#1fb5c9",
    "contempt": "#a0522d", "calm": "#8fbcd4", "positive": "#4e9a3a", "negative": "#d7301f",
}
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#469990",
           "#9a6324", "#800000", "#808000", "#000075"]
MIME = {
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/mp4", ".webm": "video/webm", ".mkv": "video/webm",
    ".ogv": "video/ogg", ".avi": "video/x-msvideo", ".flv": "video/x-flv",
    ".wav": "audio/wav", ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".flac": "audio/flac", ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
}


@dataclass
class Media:
    """The media a report plays: where it is, what it holds, or why there is none."""

    path: Path | None  # None: no media (a camera, or not found)
    missing: str | None = None  # the page says so instead of showing a player
    has_video: bool = True
    duration: float = 0.0
    codecs: str = ""
    notes: list[str] = field(default_factory=list)


def colours(labels: list[str]) -> dict[str, str]:
    out, spare = {}, iter(PALETTE * (len(labels) // len(PALETTE) + 1))
    for lab in labels:
        out[lab] = NAMED_COLOURS.get(lab.lower()) or next(spare)
    return out


def report_path(timeline: Path) -> Path:
    """``talk.jsonl`` -> ``talk.html`` beside it (``talk.partial.jsonl`` -> ``talk.partial.html``)."""
    return timeline.with_suffix(".html")


def _codecs(path: Path) -> tuple[bool, str]:
    import av

    with av.open(str(path)) as c:
        from .media import video_stream

        v = video_stream(c)
        names = [s.codec_context.name for s in ([v] if v is not None else []) + list(c.streams.audio[:1])]
        return v is not None, "/".join(names)


def find_media(tl: Timeline, media: str | Path | None) -> Media:
    """The media for ``tl``: ``media`` when given (it must exist), else the run's source (as written,
    or beside the timeline). A camera source or a source that is gone is a note, not an error.
    A complete file timeline and a media file of another length is an error (another recording)."""
    from .media import probe

    relative_note = None
    if media is not None:
        p = Path(media)
        if not p.is_file():
            raise MerstreamError(f"media not found: {p}" if not p.exists() else f"--media {p} is not a file")
    else:
        source = str(tl.meta.get("source") or "")
        if not source or source == "none":
            return Media(None, "no media: the timeline has no source recorded")
        if source.isdigit() or "://" in source:
            return Media(None, f"no media: the timeline was scored live from {source} (pass --media RECORDING to play one)")
        # merstream writes the absolute path; an older timeline's relative one was relative to wherever
        # it was scored, so the file of that name beside the timeline comes first, then the current folder
        candidates = [Path(source)] if Path(source).is_absolute() else [tl.path.parent / Path(source).name, Path(source)]
        p = next((c for c in candidates if c.is_file()), None)
        if p is None:
            return Media(None, f"media not found: {source}")
        relative_note = (f"the timeline names its media by a relative path ({source}); playing {p.resolve()}"
                         if not Path(source).is_absolute() else None)
    info = probe(p)
    has_video, codecs = _codecs(p)
    m = Media(p, None, has_video, info.duration, codecs)
    if relative_note:
        m.notes.append(relative_note)
    scored_track = tl.meta.get("audio_track")
    if isinstance(scored_track, int) and info.audio_tracks > 1 and scored_track != info.audio_track:
        m.notes.append(f"the voice was scored from audio track {scored_track}; the player plays the file's "
                       f"default track ({info.audio_track} of {info.audio_tracks} audio tracks)")
    covered = tl.covered
    if info.duration > 0 and tl.windows and abs(info.duration - covered) > MISMATCH_S:
        what = f"{p} is {info.duration:.2f} s long but the timeline covers 0-{covered:.2f} s"
        if tl.state == "complete" and not tl.live:
            raise MerstreamError(f"{what}: it is not the file this timeline was scored from (pass the right --media)")
        if covered > info.duration + MISMATCH_S:
            m.notes.append(f"{what}: windows past the end of the media cannot be played")
        else:
            m.notes.append(f"the timeline covers the first {covered:.1f} s of {info.duration:.1f} s of media ({tl.state} run)")
    return m


def _src(media: Media, page: Path) -> tuple[str, bool]:
    """(the player's src, whether it is a link rather than embedded)."""
    size = media.path.stat().st_size
    if size <= EMBED_LIMIT:
        mime = MIME.get(media.path.suffix.lower(), "application/octet-stream")
        return f"data:{mime};base64," + base64.b64encode(media.path.read_bytes()).decode("ascii"), False
    try:
        rel = os.path.relpath(media.path.resolve(), page.resolve().parent)
        # percent-encoded from the name's bytes, so a name that is not valid UTF-8 still links to its file
        return urllib.parse.quote(os.fsencode("/".join(rel.split(os.sep))), safe="/"), True
    except ValueError:  # another drive (Windows)
        return media.path.resolve().as_uri(), True


def slots(windows: list[dict]) -> list[tuple[float, float]]:
    """Each window's column on the time axis: from its start to the next window's start (or its own end)."""
    out = []
    for i, w in enumerate(windows):
        end = w["end"] if i + 1 == len(windows) else min(w["end"], windows[i + 1]["start"])
        out.append((w["start"], max(end, w["start"])))
    return out


def top_shares(tl: Timeline) -> list[tuple[str, float]]:
    """(top label or None for unscored windows, share of the covered time), largest first."""
    time = defaultdict(float)
    for w, (a, b) in zip(tl.windows, slots(tl.windows)):
        time[w.get("top") if scored(w) else None] += b - a
    total = sum(time.values()) or 1.0
    return sorted(((k, v / total) for k, v in time.items()), key=lambda kv: -kv[1])


def _bars(w: dict, labels: list[str], col: dict[str, str]) -> str:
    """One window's scores as a stacked column (each band: the label's share of the summed scores)."""
    if not scored(w):
        return f'<svg viewBox="0 0 10 {BAR_H}" preserveAspectRatio="none"></svg>'
    scores = w["scores"]
    total = sum(max(scores.get(lab, 0.0), 0.0) for lab in labels) or 1.0
    y, parts = float(BAR_H), []
    for lab in labels:
        h = max(scores.get(lab, 0.0), 0.0) / total * BAR_H
        y -= h
        stroke = ' stroke="#111" stroke-width="2" vector-effect="non-scaling-stroke"' if lab == w["top"] else ""
        parts.append(f'<rect x="0" y="{y:.2f}" width="10" height="{h:.2f}" fill="{col[lab]}"{stroke}>'
                     f'<title>{html.escape(lab)} {scores.get(lab, 0.0):.2f}</title></rect>')
    return f'<svg viewBox="0 0 10 {BAR_H}" preserveAspectRatio="none">{"".join(parts)}</svg>'


def _mods(m: str) -> str:
    return "".join(f'<span class="{"on" if c in m else "off"}">{c}</span>' for c in "LVA")


def _track(tl: Timeline, labels: list[str], col: dict[str, str]) -> str:
    cols = slots(tl.windows)
    narrowest = min((b - a for a, b in cols if b > a), default=1.0)
    pps = max(MIN_COLUMN_PX / narrowest, TRACK_PX / max(tl.covered, 1e-3))
    items, x = [], 0.0
    for w, (a, b) in zip(tl.windows, cols):
        gap = a * pps - x
        width = (b - a) * pps
        x = b * pps
        ok = scored(w)
        tip = html.escape(", ".join(f"{k} {v:.2f}" for k, v in sorted((w.get("scores") or {}).items(), key=lambda kv: -kv[1])), quote=True)
        top = html.escape(w["top"]) if ok else "no modality"
        items.append(
            f'<div class="win{"" if ok else " gap"}" role="button" tabindex="0" data-start="{w["start"]}" '
            f'data-s="{a}" data-e="{b}" style="width:{width:.1f}px;margin-left:{max(gap, 0):.1f}px" '
            f'title="{w["start"]:.2f}-{w["end"]:.2f} s{": " + tip if tip else ""}">'
            f'{_bars(w, labels, col)}<div class="top">{top}</div><div class="mods">{_mods(w.get("modalities") or "")}</div>'
            f'<div class="words">{html.escape(w.get("text") or "")}</div></div>'
        )
    step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600) if s * pps >= 60 or s == 3600)
    ticks = "".join(f'<span class="tick" style="left:{t * pps:.1f}px">{_clock(t)}</span>'
                    for t in range(step, int(tl.covered) + 1, step))
    return (f'<div id="scroller"><div id="track" data-pps="{pps:.4f}" style="width:{x:.1f}px">{"".join(items)}'
            f'<div id="cursor" style="left:0px"></div>{ticks}</div></div>')


def _clock(t: float) -> str:
    t = int(t)
    return f"{t // 60}:{t % 60:02d}" if t >= 60 else f"{t} s"


def _player(media: Media, page: Path) -> str:
    if media.path is None:
        return f'<p class="note bad" id="media-note">{html.escape(media.missing or "no media")}</p>'
    src, linked = _src(media, page)
    tag = "video" if media.has_video else "audio"
    mime = MIME.get(media.path.suffix.lower(), "")
    return (f'<{tag} id="player" controls preload="auto" src="{html.escape(src, quote=True)}" '
            f'data-name="{html.escape(media.path.name, quote=True)}" data-codecs="{html.escape(media.codecs, quote=True)}" '
            f'data-mime="{mime}"{" data-linked=1" if linked else ""}></{tag}>'
            f'<p class="note bad" id="media-note" hidden></p>')


STATE_TEXT = {
    "complete": "complete",
    "partial": "partial: the run was cut short",
    "unfinished": "unfinished: no end line (a live run still writing, or one that died)",
    "damaged": "damaged: the end line counts {counted} windows, the file holds {held}",
}


def state_text(tl: Timeline) -> str:
    """The timeline's completeness in words (``STATE_TEXT``, with a damaged one's window counts)."""
    return STATE_TEXT[tl.state].format(counted=len(tl.windows) + tl.missing_windows, held=len(tl.windows))


def _card_facts(card) -> list[tuple[str, str]]:
    """The model card of the timeline's meta line (merstream version, weights sha256, licence)."""
    if not isinstance(card, dict):
        return []
    weights = card.get("weights_sha256")
    return [("licence", str(card.get("licence") or "unknown")),
            ("weights", f"sha256 {weights[:16]}..." if isinstance(weights, str) else "-"),
            ("merstream", str(card.get("merstream_version") or "-"))]


def _summary(tl: Timeline, labels: list[str], col: dict[str, str]) -> str:
    m = tl.meta
    rows = []
    for lab, share in top_shares(tl):
        swatch = f'<i style="background:{col[lab]}"></i>' if lab else '<i style="background:#ddd"></i>'
        rows.append(f'<tr><td class="legend"><span>{swatch}{html.escape(lab or "no modality (gap)")}</span></td>'
                    f'<td class="num">{share * 100:.0f} %</td></tr>')
    state = state_text(tl)
    if tl.end and tl.end.get("error"):
        state += f" ({tl.end['error']})"
    facts = [
        ("completeness", f"{state}; {len(tl.windows)} windows, 0-{tl.covered:.1f} s"),
        ("labels", ", ".join(labels)),
        ("model", str(m.get("model") or "-").removeprefix("model: ")),
        ("backend", str(m.get("backend") or "-")),
        *_card_facts(m.get("model_card")),
        ("window / hop", f"{m.get('window', '-')} s / {m.get('hop', '-')} s"),
        ("source", str(m.get("source") or "-")),
    ]
    if tl.skipped_tail:
        facts.append(("note", "the last line was half-written (a live run) and is left out"))
    fact_rows = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    return (f'<table class="summary"><tr><th colspan=2>share of time as the top emotion</th></tr>'
            f'{"".join(rows)}</table><table class="summary" style="margin-top:10px">{fact_rows}</table>')


def render(tl: Timeline, media: Media, page: Path) -> str:
    labels = tl.labels
    col = colours(labels)
    legend = "".join(f'<span><i style="background:{col[lab]}"></i>{html.escape(lab)}</span>' for lab in labels)
    run_notes = [n for n in (tl.end or {}).get("notes", []) if isinstance(n, str)]  # e.g. why a modality is missing
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in [*run_notes, *media.notes])
    if not tl.windows:
        notes += '<p class="note">no windows scored yet</p>'
    title = html.escape(tl.path.name)
    state = tl.state
    css = (ASSETS / "report.css").read_text(encoding="utf-8")
    js = (ASSETS / "report.js").read_text(encoding="utf-8")
    meta_json = json.dumps(tl.meta).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>{title}: emotion report</title><style>{css}</style></head>
<body>
<h1>{title} <span class="badge {state}" id="state">{html.escape(state)}</span></h1>
<p class="sub">merstream emotion timeline: click a window to play from its start. Column bands: each label's share of the window's summed scores (hover for the scores); L/V/A: the language, vision and audio modalities the window had.</p>
{notes}<div class="row"><div class="media">{_player(media, page)}</div><div class="facts">{_summary(tl, labels, col)}</div></div>
<div class="legend" style="margin-top:10px">{legend}</div>
{_track(tl, labels, col)}
<script type="application/json" id="timeline-meta">{meta_json}</script>
<script>{js}</script>
</body></html>
"""


def write_report(timeline: str | Path, media: str | Path | None = None, out: str | Path | None = None) -> tuple[Path, Media]:
    """Read ``timeline``, find its media and write the report (default: beside the timeline, .html)."""
    tl = read_timeline(timeline)
    page = Path(out) if out is not None else report_path(tl.path)
    if page.suffix.lower() not in (".html", ".htm"):
        raise MerstreamError(f"the report is an HTML file: {page} must end in .html")
    m = find_media(tl, media)
    if tl.state == "damaged":  # said on the page and by the command, not only in the badge
        m.notes.append(state_text(tl))
    # a file name that is not valid UTF-8 reaches Python with surrogates: shown as U+FFFD on the page
    text = render(tl, m, page).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        page.parent.mkdir(parents=True, exist_ok=True)
        with replaced_whole(page) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as e:
        raise MerstreamError(f"cannot write the report {page}: {e.strerror or e}") from None
    return page, m
