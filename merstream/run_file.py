"""Score a media file through the streaming engine on a simulated clock (as fast as possible)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .asr import Transcriber, Word
from .config import StreamConfig
from .engine import Engine, WindowResult
from .media import MediaInfo, iter_frames, probe, read_audio
from .errors import MerstreamError
from .scorer import Scorer

__all__ = ["FileJob", "prepare", "make_engine", "score_job", "Word"]


@dataclass
class FileJob:
    info: MediaInfo
    audio: np.ndarray | None
    words: list[Word]
    notes: list[str]


def prepare(path: str, scorer: Scorer, transcriber: Transcriber | None, on_note: Callable[[str], None] = print) -> FileJob:
    """Probe, decode the audio track and transcribe it (words with times)."""
    info = probe(path)
    notes = []
    audio = None
    if info.has_audio:
        audio = read_audio(path, scorer.audio_cfg.sample_rate)
        if audio is not None and len(audio) == 0:
            audio = None
    if audio is None:
        notes.append("no audio track: scoring without the audio and language modalities")
    if not info.has_video:
        notes.append("no video track: scoring without the vision modality")
    words: list[Word] = []
    if audio is not None and transcriber is not None:
        words = list(transcriber.words(audio))
    elif audio is not None:
        notes.append("ASR off: scoring without the language modality")
    for n in notes:
        on_note(n)
    return FileJob(info, audio, words, notes)


def make_engine(job: FileJob, scorer: Scorer, stream: StreamConfig) -> Engine:
    has_audio = job.audio is not None
    engine = Engine(scorer, stream, has_video=job.info.has_video, has_audio=has_audio, has_text=has_audio)
    engine.insert_words(job.words, until=float("inf"))
    return engine


def score_job(
    path: str, job: FileJob, engine: Engine, on_progress: Callable[[float], None] | None = None
) -> Iterator[WindowResult]:
    """Feed frames (in time order) and audio up to each frame's time into the engine; yield
    windows as soon as the engine can score them."""
    sr = engine.sr
    has_audio = job.audio is not None
    fed = 0

    def feed_audio(upto_s: float) -> None:
        nonlocal fed
        if not has_audio:
            return
        upto = len(job.audio) if upto_s == float("inf") else min(len(job.audio), int(upto_s * sr))
        if upto > fed:
            engine.insert_audio(job.audio[fed:upto])
            fed = upto

    last_t = 0.0
    if job.info.has_video:
        for t, rgb in iter_frames(path):
            feed_audio(t)
            engine.insert_frame(t, rgb)
            last_t = t
            yield from engine.process_iter()
            if on_progress:
                on_progress(t)
    feed_audio(float("inf"))
    yield from engine.process_iter()
    frame_end = last_t + (1.0 / job.info.fps if job.info.fps else 0.0) if job.info.has_video else 0.0
    audio_end = len(job.audio) / sr if has_audio else 0.0
    duration = max(frame_end, audio_end)
    if job.info.duration > 0:  # decoders may pad (AAC priming); the container knows the length
        duration = min(duration, max(job.info.duration, frame_end))
    yield from engine.finish(duration)
    if on_progress:
        on_progress(duration)
    decoded = max(frame_end, audio_end)
    expected = job.info.duration
    if expected > 0 and decoded < expected - max(0.5, 0.05 * expected):
        raise MerstreamError(
            f"{path} is truncated or corrupt: the container says {expected:.2f} s but only {decoded:.2f} s could be decoded "
            f"(the windows of the decodable part were written)"
        )
