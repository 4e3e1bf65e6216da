"""Media decoding with PyAV: probe a file, iterate video frames lazily, read audio as 16 kHz mono.

Every decoding failure becomes a one-line :class:`MerstreamError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from .errors import MerstreamError


@dataclass
class MediaInfo:
    path: str
    duration: float  # seconds (best estimate from the container; refined while decoding)
    has_video: bool
    has_audio: bool
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    audio_start: float = 0.0  # where the audio track starts on the media clock (earlier: no audio, not silence)
    audio_track: int = 0  # the audio track used (0-based among the audio tracks, as ffmpeg's -map 0:a:N)
    audio_tracks: int = 0  # how many audio tracks there are
    audio_why: str = "the first"  # why that track: "asked for", "marked default", "the first"

    def audio_track_note(self) -> str | None:
        """Which audio track is used, when there is a choice."""
        if self.audio_tracks < 2:
            return None
        return (f"audio: track {self.audio_track} ({self.audio_why}) of {self.audio_tracks} audio tracks "
                f"0-{self.audio_tracks - 1} (--audio-track N picks another)")


def is_url(path: str | Path) -> bool:
    """A stream address (rtsp://, http://, ...) rather than a local file."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def _open(path: str | Path):
    if is_url(path):
        try:  # network streams: give up on a dead server instead of hanging (seconds, in microseconds)
            return av.open(path, timeout=10.0)
        except av.FFmpegError as e:
            raise MerstreamError(f"cannot open stream {path} ({_reason(e)})") from None
    p = Path(path)
    if not p.exists():
        raise MerstreamError(f"no such file: {p}")
    if p.is_dir():
        raise MerstreamError(f"{p} is a directory, not a media file")
    if not p.is_file():  # a FIFO, /dev/stdin, a device: not seekable, and reads as 0 bytes
        raise MerstreamError(f"{p} is not a regular file: pipes and devices are not supported (save the media to a file)")
    if p.stat().st_size == 0:
        raise MerstreamError(f"{p} is empty (0 bytes)")
    try:
        return av.open(str(p))
    except av.FFmpegError as e:
        raise MerstreamError(f"{p} is not a readable video or audio file ({_reason(e)})") from None


def _reason(e: Exception) -> str:
    return str(getattr(e, "strerror", None) or e).splitlines()[0]


def audio_stream(c, track: int | None = None, path: str | Path = ""):
    """The audio stream to use: track ``track`` (0-based among the audio streams), else the one
    marked default (as players and ffmpeg pick it), else the first. None when there is none."""
    streams = list(c.streams.audio)
    if track is not None:
        if not 0 <= track < len(streams):
            have = f"{len(streams)} audio track{'s' if len(streams) != 1 else ''}" + (f" (0-{len(streams) - 1})" if streams else "")
            raise MerstreamError(f"--audio-track {track}: {path} has {have}")
        return streams[track]
    if not streams:
        return None
    return next((a for a in streams if a.disposition & av.stream.Disposition.default), streams[0])


def probe(path: str | Path, audio_track: int | None = None) -> MediaInfo:
    with _open(path) as c:
        v = video_stream(c)
        a = audio_stream(c, audio_track, path)
        if v is None and a is None:
            raise MerstreamError(f"{path} has neither a video nor an audio stream")
        duration = 0.0
        if c.duration:  # counted from the container's start time: on the media clock it ends later
            duration = c.duration / av.time_base + (c.start_time / av.time_base if c.start_time else 0.0) - media_origin(c)
        elif v is not None and v.duration and v.time_base:
            duration = float(v.duration * v.time_base)
        fps = float(v.average_rate) if v is not None and v.average_rate else None
        return MediaInfo(
            str(path), duration, v is not None, a is not None, fps,
            v.codec_context.width if v is not None else None,
            v.codec_context.height if v is not None else None,
            audio_start=max(_start_seconds(a) - media_origin(c), 0.0) if a is not None else 0.0,
            audio_track=list(c.streams.audio).index(a) if a is not None else 0, audio_tracks=len(c.streams.audio),
            audio_why="asked for" if audio_track is not None else
            "marked default" if a is not None and a.disposition & av.stream.Disposition.default else "the first",
        )


# containers whose timestamps may start anywhere (a broadcast or network clock): their zero is the
# first timestamp. Files (MP4, Matroska, WAV, ...) count from 0, and a stream that starts later
# starts later on the media clock (an MP4 with an empty edit, `ffmpeg -itsoffset`).
CLOCK_FORMATS = {"mpegts", "mpegtsraw", "mpeg", "mpegvideo", "rtsp", "rtp", "sdp", "hls", "dash"}


def media_origin(c) -> float:
    """The container's zero, in stream seconds: media time 0 for every stream."""
    start = c.start_time / av.time_base if c.start_time is not None else 0.0
    if start > 0 and CLOCK_FORMATS & set(c.format.name.split(",")):
        return start
    return 0.0


def iter_frames(path: str | Path, rgb: bool = True) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (media time in seconds, RGB uint8 HxWx3) for every decodable video frame
    (``rgb=False``: the decoded ``av.VideoFrame``, to convert later with :func:`frame_rgb`)."""
    with _open(path) as c:
        stream = video_stream(c)
        if stream is None:
            return
        stream.thread_type = "AUTO"
        origin = media_origin(c)
        tb = float(stream.time_base)
        last = -1.0
        try:
            for frame in c.decode(stream):
                if frame.pts is None:
                    t = last + 1.0 / float(stream.average_rate or 30)
                else:
                    t = frame.pts * tb - origin
                if t <= last:  # duplicate or out-of-order timestamp: keep time monotonic
                    t = last + 1e-3
                last = t
                yield t, frame_rgb(frame) if rgb else frame
        except av.FFmpegError as e:
            raise MerstreamError(f"{path}: video decoding failed after {max(last, 0):.2f} s, file truncated or corrupt ({_reason(e)})") from None


def frame_rgb(frame) -> np.ndarray:
    """The frame as a player shows it: RGB, turned by its display matrix (a phone video's rotation)."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = int(round(_rotation(frame) / 90)) % 4  # counter-clockwise quarter turns (FFmpeg's convention)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def upright_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the video's first frame as a player shows it (turned by its display matrix)."""
    with _open(path) as c:
        v = video_stream(c)
        frame = next(c.decode(v), None) if v is not None else None
        if frame is None:
            raise MerstreamError(f"{path}: no decodable video frame")
        h, w = frame_rgb(frame).shape[:2]
    return w, h


def _rotation(frame) -> float:
    try:
        return float(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):  # no display matrix
        return 0.0


def video_stream(c):
    """The first real video stream (cover art in audio files is not video)."""
    for v in c.streams.video:
        if not (v.disposition & av.stream.Disposition.attached_pic):
            return v
    return None


def _start_seconds(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0


def iter_audio(path: str | Path, sample_rate: int = 16000, track: int | None = None) -> Iterator[np.ndarray]:
    """The audio stream (:func:`audio_stream`) as consecutive float32 mono chunks at ``sample_rate`` on the media
    clock: sample 0 is at the container's zero (:func:`media_origin`; audio that starts later is
    preceded by zeros, see ``MediaInfo.audio_start``, audio before it is cut). Nothing when there is
    no audio stream."""
    with _open(path) as c:
        stream = audio_stream(c, track, path)
        if stream is None:
            return
        origin = media_origin(c)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        done = 0
        skip = 0
        try:
            for frame in c.decode(stream):
                if origin is not None:  # align the first audio frame with the video clock
                    lead = (float(frame.pts * frame.time_base) if frame.pts is not None else _start_seconds(stream)) - origin
                    origin = None
                    if lead > 0:
                        pad = np.zeros(int(round(lead * sample_rate)), dtype=np.float32)
                        done += len(pad)
                        yield pad
                    else:
                        skip = int(round(-lead * sample_rate))
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    done += len(chunk)
                    if len(chunk):  # an empty chunk is not the end (live's file source stopped at one)
                        yield chunk
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)
        except av.FFmpegError as e:
            raise MerstreamError(f"{path}: audio decoding failed after {done / sample_rate:.2f} s, file truncated or corrupt ({_reason(e)})") from None


def read_audio(path: str | Path, sample_rate: int = 16000, track: int | None = None) -> np.ndarray | None:
    """The audio stream (:func:`audio_stream`) as float32 mono at ``sample_rate`` (None when there is none)."""
    with _open(path) as c:
        if audio_stream(c, track, path) is None:
            return None
    chunks = list(iter_audio(path, sample_rate, track))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)
