"""Score a media file through the streaming engine on a simulated clock (as fast as possible)."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .asr import Transcriber, Word, unsure_note
from .config import StreamConfig
from .engine import Counters, Engine, WindowResult, window_count
from .engine.engine import TIE
from .engine.windows import window_at
from .media import MediaInfo, frame_rgb, iter_frames, probe, read_audio
from .errors import MerstreamError
from .scorer import Scorer
from .sinks import TimelineWriter

__all__ = ["FileJob", "FileRun", "prepare", "make_engine", "score_job", "score_file", "Word"]


@contextlib.contextmanager
def signals_deferred():
    """SIGINT/SIGTERM that arrive inside the block are handled when it ends (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if caught and callable(old[caught[0]]):
            old[caught[0]](caught[0], None)


class BackgroundWords:
    """Transcribes a file's audio in a daemon thread while its frames are decoded and encoded
    (faster-whisper keeps about one of two cores busy; the encoders take the rest)."""

    def __init__(self, transcriber: Transcriber, audio: np.ndarray):
        self.words: list[Word] | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(transcriber, audio), name="merstream-asr", daemon=True)
        self._thread.start()

    def _run(self, transcriber: Transcriber, audio: np.ndarray) -> None:
        t0 = time.perf_counter()
        words = []
        try:
            for w in transcriber.words(audio):  # lazy: one whisper segment (<= 30 s of audio) at a time
                if self._stop.is_set():
                    break
                words.append(w)
            self.words = words
        except BaseException as e:  # re-raised in the scoring thread by result()
            self.error = e
        self.seconds = time.perf_counter() - t0

    def stop(self) -> None:
        """Abandon the transcript (an error or a signal in the scoring thread) and wait for the
        thread to leave faster-whisper: a process must not exit while the thread is inside
        CTranslate2 (it aborts with "terminate called without an active exception"). The thread
        stops after the whisper segment in progress; the first segment comes only after voice
        detection over the whole audio (seconds for a long file)."""
        self._stop.set()
        self._thread.join()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> list[Word]:
        self._thread.join()
        e = self.error
        if e is None:
            return self.words or []
        if isinstance(e, MerstreamError) or not isinstance(e, Exception):  # ours, or an interruption
            raise e
        raise MerstreamError(f"speech recognition failed: {(str(e).splitlines() or [type(e).__name__])[0]}")


@dataclass
class FileJob:
    info: MediaInfo
    audio: np.ndarray | None
    words: list[Word]
    notes: list[str]
    pending: BackgroundWords | None = None  # words still being transcribed (overlap=True)
    asr_seconds: float = 0.0
    asr: bool = False  # the audio is transcribed (words may still be empty: silence)


def prepare(path: str, scorer: Scorer, transcriber: Transcriber | None, on_note: Callable[[str], None] = print,
            overlap: bool = False, audio_track: int | None = None) -> FileJob:
    """Probe, decode the audio track and transcribe it (words with times); with ``overlap`` the
    transcription runs in the background (``job.pending``) while :func:`score_job` encodes frames."""
    t0 = time.perf_counter()
    info = probe(path, audio_track)
    notes = [n for n in [info.audio_track_note()] if n]
    audio = None
    if info.has_audio:
        audio = read_audio(path, scorer.audio_cfg.sample_rate, info.audio_track)
        if audio is not None and len(audio) == 0:
            audio = None
    if audio is None:
        notes.append(("the audio track holds no decodable audio" if info.has_audio else "no audio track")
                     + ": scoring without the audio and language modalities")
    if not info.has_video:
        notes.append("no video track: scoring without the vision modality")
    words: list[Word] = []
    pending = None
    if audio is not None and transcriber is not None:
        if overlap:
            pending = BackgroundWords(transcriber, audio)
        else:
            words = list(transcriber.words(audio))
    elif audio is not None:
        notes.append("ASR off: scoring without the language modality")
    for n in notes:
        on_note(n)
    return FileJob(info, audio, words, notes, pending, time.perf_counter() - t0,
                   asr=audio is not None and transcriber is not None)


def sampled_frames(frames, stream: StreamConfig, n: int, duration: float) -> Iterator[tuple[float, object]]:
    """Only the frames the engine can pick: for every window sample time the engine takes the
    nearest frame (the earlier one on a tie), so a frame at p between neighbours pp and q is
    needed iff a sample time lies in ((pp + p) / 2, (p + q) / 2]. The rest (about 4 in 5 at
    30 fps) are never converted to RGB. Frames near the end are all kept: the last window is
    clipped at the end of the media and samples its own span. Where frames lie farther apart than
    the sampling step, a sample time with no frame near takes the frame on screen (held), so p is
    then needed up to q."""
    step = stream.window / n  # frames closer than this leave no sample time without a near frame
    # the last window starts here; its clipped span is sampled anew, so keep every frame from it on
    tail = (window_count(duration, stream.window, stream.hop) - 1) * stream.hop - 0.5 if duration > 0 else math.inf

    def needed(lo: float, hi: float) -> bool:
        """Is a sample time in (lo, hi], the engine's own sample times and tie rule?"""
        lo, hi = max(lo, -1.0) + TIE / 2, hi + TIE / 2
        first = max(0, math.floor((lo - stream.window) / stream.hop))
        for k in range(first, math.floor(hi / stream.hop) + 2):
            if any(lo < t <= hi for t in window_at(k, stream.window, stream.hop).frame_times(n)):
                return True
        return False

    pp = -math.inf
    prev = None
    for t, frame in frames:
        if prev is not None:
            hi = (prev[0] + t) / 2 if t - prev[0] <= step else t
            if prev[0] >= tail or needed((pp + prev[0]) / 2, hi):
                yield prev
            pp = prev[0]
        prev = (t, frame)
    if prev is not None:
        yield prev


def make_engine(job: FileJob, scorer: Scorer, stream: StreamConfig, reuse: bool = True) -> Engine:
    has_audio = job.audio is not None
    engine = Engine(scorer, stream, has_video=job.info.has_video, has_audio=has_audio, has_text=has_audio and (job.asr or bool(job.words)),
                    reuse=reuse)
    engine.audio_from = job.info.audio_start
    if job.pending is None:
        engine.insert_words(job.words, until=float("inf"))
    return engine


def _take_words(job: FileJob, engine: Engine) -> None:
    """Hand the background transcript to the engine (waiting for it if need be)."""
    if job.pending is not None:
        job.words = job.pending.result()
        job.asr_seconds = job.pending.seconds
        job.pending = None
        engine.insert_words(job.words, until=float("inf"))


FILE_BATCH_WINDOWS = 8  # a file's windows are scored 8 at a time: batched encoders run ~1.5x faster
MAX_AHEAD_WINDOWS = 60  # windows encoded ahead of their words at most (their frames stay in memory)


def score_job(
    path: str, job: FileJob, engine: Engine, on_progress: Callable[[float], None] | None = None,
    batch_windows: int = FILE_BATCH_WINDOWS,
) -> Iterator[WindowResult]:
    """Feed frames (in time order) and audio up to each frame's time into the engine; yield
    windows as soon as ``batch_windows`` of them can be scored together (and the rest at the end).
    Batching changes no result: each window still gets exactly its own frames, audio and words."""
    sr = engine.sr
    has_audio = job.audio is not None
    fed = 0
    stream = engine.stream
    batch = max(1, batch_windows)

    def flush_at() -> float:  # media time at which the next batch of windows is complete
        return window_at(engine.next_index + batch - 1, stream.window, stream.hop).end

    def feed_audio(upto_s: float) -> None:
        nonlocal fed
        if not has_audio:
            return
        upto = len(job.audio) if upto_s == float("inf") else min(len(job.audio), int(upto_s * sr))
        if upto > fed:
            engine.insert_audio(job.audio[fed:upto])
            fed = upto
            if fed == len(job.audio):
                engine.end_audio()  # a shorter audio track must not hold the video windows back

    last_t = 0.0
    if job.info.has_video:
        frames = sampled_frames(iter_frames(path, rgb=False), engine.stream, engine.scorer.cfg.num_frames, job.info.duration)
        due = flush_at()
        for t, frame in frames:
            feed_audio(t)
            engine.insert_frame(t, frame_rgb(frame))
            last_t = t
            if t >= due:
                if job.pending is not None and (
                    job.pending.done() or engine.encoded_ahead - engine.next_index >= MAX_AHEAD_WINDOWS
                ):
                    _take_words(job, engine)  # ready, or far enough ahead to wait (bounds the frames held)
                if job.pending is None:
                    yield from engine.process_iter()
                    due = flush_at()
                else:  # words not there yet: encode the media of the waiting windows meanwhile
                    engine.encode_ahead(limit=batch)
                    due += batch * stream.hop
            if on_progress:
                on_progress(t)
        engine.end_video(last_t + (1.0 / job.info.fps if job.info.fps else 0.0))  # the last frame is on screen until then
    feed_audio(float("inf"))
    while job.pending is not None and not job.pending.done():  # an audio-only file (or the windows after
        if not engine.encode_ahead(limit=batch):  # the last frame): encode their audio while the words come
            break
        if on_progress and not job.info.has_video:
            t = window_at(engine.encoded_ahead, stream.window, stream.hop).end
            on_progress(min(t, job.info.duration) if job.info.duration > 0 else t)
    _take_words(job, engine)
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


@dataclass
class FileRun:
    """What one `merstream file` run produced."""

    path: str
    windows: int
    duration: float
    jsonl: Path
    csv: Path
    png: Path | None
    counters: Counters
    seconds: float  # wall time, decoding + ASR + scoring
    asr_seconds: float  # audio decoding + ASR, or (overlapped, the default) the ASR thread's own time
    results: list[WindowResult]


def score_file(
    path: str | Path,
    scorer: Scorer,
    transcriber: Transcriber | None,
    stream: StreamConfig,
    out_dir: Path,
    plot: bool = True,
    reuse: bool = True,
    on_note: Callable[[str], None] = print,
    on_start: Callable[[float], None] | None = None,
    on_window: Callable[[float, int], None] | None = None,
    stem: str | None = None,
    audio_track: int | None = None,
) -> FileRun:
    """The whole `merstream file` pipeline for one input: decode, transcribe, score every window,
    write the timeline as windows are produced (JSONL/CSV flushed per window), then the plot.
    On an error or a signal the timeline is closed as <name>.partial.* and the error re-raised.
    ``stem`` names the outputs (default: the input's name without its extension)."""
    t0 = time.perf_counter()
    path = Path(path)
    unsure_before = transcriber.unsure_seconds if transcriber is not None else 0.0
    notes: list[str] = []  # what the run said about its input: also kept in the timeline's end line

    def note(msg: str) -> None:
        notes.append(msg)
        on_note(msg)

    job = prepare(str(path), scorer, transcriber, on_note=note, overlap=reuse, audio_track=audio_track)  # the naive baseline: sequential
    writer, engine, error = None, None, None
    try:
        engine = make_engine(job, scorer, stream, reuse=reuse)  # loads what the run uses (a Whisper encoder): before any output
        writer = TimelineWriter(Path(out_dir), stem or path.stem, scorer.labels, meta={
            "source": str(path.resolve()), "model": scorer.notice, "model_card": scorer.card, "backend": scorer.name, "labels": scorer.labels,
            "window": stream.window, "hop": stream.hop, "task": scorer.cfg.task, "threshold": scorer.cfg.threshold,
            "audio_track": job.info.audio_track if job.info.has_audio else None,
        })
        if on_start:
            on_start(job.info.duration)
        for r in score_job(str(path), job, engine, on_progress=(lambda t: on_window(t, len(writer.results))) if on_window else None):
            writer.write(r)
    except BaseException as e:
        error = str(e) if isinstance(e, MerstreamError) else f"interrupted ({e or type(e).__name__})"
        raise
    finally:
        with signals_deferred():  # a second Ctrl-C must not cut the clean-up short
            stopped = engine.stopped(writer.results[-1].end) if engine is not None and writer is not None and writer.results else {}
            for track, t in stopped.items():
                note(f"the {track} track stops at {t:.1f} s: the windows after it score without it")
            if transcriber is not None and transcriber.unsure_seconds > unsure_before:
                note(unsure_note(transcriber.unsure_seconds - unsure_before))
            if writer is not None:
                info = {**({"stopped": stopped} if stopped else {}), **({"notes": notes} if notes else {})}
                writer.close(error=error, info=info or None)
                if writer.results and error is not None:
                    on_note(f"timeline so far: {writer.jsonl_path} ({len(writer.results)} windows)")
            if job.pending is not None:
                job.pending.stop()
    if not writer.results:
        raise MerstreamError(f"{path}: no windows could be scored (no decodable media)")
    png = writer.plot(title=f"{path.name} - {scorer.name}") if plot else None
    return FileRun(str(path), len(writer.results), writer.results[-1].end, writer.jsonl_path, writer.csv_path, png,
                   engine.counters, time.perf_counter() - t0, job.asr_seconds, writer.results)
