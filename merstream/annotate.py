"""`merstream file --record`: the source video re-encoded with the scores drawn on every frame
(the overlay of `live --record`: score bars, transcript, and the face box a face-crop model sees),
the audio stream copied as it is. Every source frame is written once with its own timestamp, so
the frame count, a variable frame rate and the audio sync are those of the source.

Each frame shows the window whose column it falls in, as in the HTML report: the latest window
that starts at or before the frame (``[start, next start)``)."""

from __future__ import annotations

import bisect
import os
from pathlib import Path

import numpy as np

from .atomic import replaced_whole
from .engine.windows import WindowResult
from .errors import MerstreamError

SUFFIXES = (".mp4", ".mov")  # (Matroska shifts every stream when the audio starts before 0: AAC priming)
COPY_INTO_MP4 = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}  # audio codecs an .mp4/.mov takes as they are
# containers whose audio packets the MP4 muxer takes as they are (Matroska, WebM and MPEG-TS packets
# of the same codecs fail after a few seconds: their audio is re-encoded to AAC instead)
COPY_FROM = {"mov,mp4,m4a,3gp,3g2,mj2"}


def check_record_path(path: Path, source: Path | None = None) -> None:
    """Fail before scoring when the annotated video cannot be written at ``path``."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise MerstreamError(f"--record: {path} must end in {', '.join(SUFFIXES)}")
    if not path.parent.is_dir():
        raise MerstreamError(f"--record: folder {path.parent} does not exist")
    if path.is_dir() or not os.access(path.parent, os.W_OK):
        raise MerstreamError(f"--record: cannot write {path}")
    if source is not None:
        from .media import probe

        if path.exists() and path.resolve() == Path(source).resolve():
            raise MerstreamError(f"--record: {path} is the input itself")
        if not probe(source).has_video:
            raise MerstreamError(f"--record needs a video track: {source} has none")


class WindowPicker:
    """The window shown at time t: the latest one starting at or before t, while t is inside it."""

    def __init__(self, results: list[WindowResult]):
        self.results = sorted(results, key=lambda r: r.start)
        self.starts = [r.start for r in self.results]

    def at(self, t: float) -> WindowResult | None:
        i = bisect.bisect_right(self.starts, t + 1e-6) - 1
        if i < 0 or t >= self.results[i].end:
            return None
        r = self.results[i]
        return r if r.scores else None  # a window with no modality has nothing to draw


def face_box(rgb: np.ndarray, cropper, side: int) -> tuple[int, int, int] | None:
    """The box the model's face crop takes from this frame (found on the frame as the pipeline keeps
    it, shorter side ``side``), in the frame's own pixels."""
    import cv2

    from .preprocess import shrink

    small = shrink(rgb, side)
    box = cropper.find(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    if box is None:
        return None
    k = rgb.shape[0] / small.shape[0]
    return round(box.x * k), round(box.y * k), round(box.size * k)


def annotate(source: str | Path, results: list[WindowResult], out: str | Path, face_side: int | None = None,
             on_frame=None, audio_track: int | None = None) -> int:
    """Write ``out`` (whole or not at all); returns the number of frames written. ``face_side``:
    the shorter side the model's face finder works at (None: the model takes whole frames). Frames
    are turned upright as a player shows them (display matrix); the audio is the scored track."""
    import av

    from .faces import FaceCropper
    from .live_view import draw_overlay
    from .media import _open, _reason, audio_stream, frame_rgb, upright_size, video_stream

    source, out = Path(source), Path(out)
    picker = WindowPicker(results)
    cropper = FaceCropper() if face_side else None
    written = 0
    with _open(source) as src:
        v = video_stream(src)
        if v is None:
            raise MerstreamError(f"--record needs a video track: {source} has none")
        a = audio_stream(src, audio_track, source)
        start = v.start_time or 0
        tb = v.time_base
        with replaced_whole(out) as tmp:
            dst = av.open(str(tmp), "w")
            try:
                ov = dst.add_stream("libx264", rate=v.average_rate or 30)
                width, height = upright_size(source)
                ov.width, ov.height = width // 2 * 2, height // 2 * 2
                ov.pix_fmt = "yuv420p"
                ov.time_base = tb
                ov.codec_context.time_base = tb
                ov.options = {"crf": "20", "preset": "veryfast", "bf": "0"}
                oa = None
                if a is not None:
                    copy = a.codec_context.name in COPY_INTO_MP4 and src.format.name in COPY_FROM
                    oa = dst.add_stream_from_template(a) if copy else dst.add_stream("aac", rate=a.codec_context.sample_rate)
                last_pts = None
                streams = [s for s in (v, a) if s is not None]
                for packet in src.demux(*streams):
                    if packet.stream is a:
                        if oa is None or packet.dts is None and packet.size == 0:
                            continue
                        if oa.codec_context.is_encoder:
                            for frame in packet.decode():
                                frame.pts = None
                                dst.mux(oa.encode(frame))
                        else:
                            packet.stream = oa
                            dst.mux(packet)
                        continue
                    for frame in packet.decode():
                        pts = frame.pts if frame.pts is not None else (last_pts + 1 if last_pts is not None else start)
                        if last_pts is not None and pts <= last_pts:
                            pts = last_pts + 1  # a repeated timestamp: keep them increasing, one tick apart
                        last_pts = pts
                        t = float((pts - start) * tb)
                        rgb = frame_rgb(frame)
                        box = face_box(rgb, cropper, face_side) if cropper is not None else None
                        r = picker.at(t)
                        status = f"{t:5.1f} s" + (f"  window {r.start:g}-{r.end:g} s  {r.modalities}" if r else "  no scores")
                        bgr = draw_overlay(np.ascontiguousarray(rgb[:, :, ::-1]), r, status, face=box)
                        img = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr[: ov.height, : ov.width]), format="bgr24")
                        img.pts = pts
                        img.time_base = tb
                        dst.mux(ov.encode(img))
                        written += 1
                        if on_frame:
                            on_frame(t)
                dst.mux(ov.encode(None))
                if oa is not None and oa.codec_context.is_encoder:
                    dst.mux(oa.encode(None))
                if written == 0:
                    raise MerstreamError(f"--record: {source} has no decodable video frames")
            except av.FFmpegError as e:
                raise MerstreamError(f"--record: cannot write {out} ({_reason(e)})") from None
            finally:
                dst.close()
    return written


def record_into(path: str | Path, run, report: bool, folder: str | None, scorer, on_note=print,
                audio_track: int | None = None) -> None:
    """A batch's extra outputs for one scored input: its report beside the timeline and its
    annotated video in ``folder`` as <name>.annotated.mp4 (an audio-only input has none)."""
    from .preprocess import stored_frame_side
    from .report import write_report

    if report:
        write_report(run.jsonl, path)
    if folder:
        from .media import probe

        if not probe(path).has_video:
            on_note("no video track: no annotated video")
            return
        side = stored_frame_side(scorer.image_size, True) if scorer.cfg.face_crop else None
        annotate(path, run.results, Path(folder) / f"{Path(run.jsonl).stem}.annotated.mp4", face_side=side,
                 audio_track=audio_track)
