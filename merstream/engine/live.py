"""The threaded live driver: sources -> ring buffers -> Engine, a transcriber thread, a scorer thread.

    runner = LiveRunner(scorer, video=CameraSource(0), audio=MicSource(), transcriber=Transcriber(),
                        options=LiveOptions(), on_result=writer.write)
    runner.start()          # opens nothing: call source.open() first (device errors are one line)
    ...                     # runner.snapshot() for a view; runner.stop() from a signal handler
    runner.wait()           # the scorer thread has scored the last window
    runner.error            # None, or why a source stopped the run (camera unplugged, ...)

Threads: one per source (writing into a FrameRing / AudioRing stamped by one Clock), one
transcriber (RollingTranscript on its own reader of the audio ring) and one scorer that owns the
Engine: it polls the rings, inserts frames / audio / committed words, and scores each window as
soon as its media has arrived. In real time:

- a window waits at most ``text_deadline`` s (after its audio and video were captured) for the
  transcript to be committed; then it is scored with the words committed so far plus the
  recogniser's latest uncommitted hypothesis (which later iterations may still revise);
- when compute falls behind, ready windows whose media was captured more than ``stale_after`` s
  ago are dropped (counted) except the newest, and the transcriber sheds audio more than
  ``asr_max_lag`` s behind, so latency does not drift;
- ``WindowResult.latency`` = clock time of scoring - clock time the window's end was captured
  (the later of its video frame and audio at the window end).

With file sources played as fast as possible (``realtime=False``) nothing is dropped or forced:
rings make producers wait, windows wait for the transcript, and the windows equal
``merstream file``'s (same frames, same samples, same engine).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..asr import Transcriber, Word
from ..config import MAX_WINDOW_SECONDS, StreamConfig
from ..errors import MerstreamError
from ..scorer import Scorer
from .buffers import AudioRing, FrameRing
from .engine import Engine
from .sources import AudioSource, Clock, Source, VideoSource
from .transcript import RollingTranscript, TranscriptStats
from .windows import Counters, WindowResult, window_at


@dataclass
class LiveOptions:
    stream: StreamConfig = field(default_factory=StreamConfig)
    text_deadline: float = 0.5  # real time: max wait for committed words after a window's media arrived
    stale_after: float | None = None  # real time: drop ready windows older than this (default deadline + 2 hops)
    max_pending: int | None = 8  # engine cap on windows scored in one go
    asr_max_lag: float = 8.0  # real time: the transcriber skips audio this far behind
    asr_min_chunk: float = 1.0  # seconds of new audio per transcription
    frame_capacity: int = 96  # frames in the video ring
    audio_capacity: float = MAX_WINDOW_SECONDS  # seconds in the audio ring (a whole window of the longest)
    poll: float = 0.02  # scorer wake-up period (s)

    def __post_init__(self) -> None:
        if self.text_deadline < 0:
            raise MerstreamError("--text-deadline must be >= 0")
        if self.stale_after is None:
            self.stale_after = self.text_deadline + 2 * self.stream.hop


@dataclass
class LiveSnapshot:
    """What a view shows; copied under no lock (numbers may be a poll apart)."""

    clock: float
    media_time: float
    fps: float
    last: WindowResult | None
    transcript: str
    pending: str
    latency_last: float | None
    latency_p50: float | None
    latency_p95: float | None
    windows_scored: int
    windows_dropped: int
    frames_captured: int
    frames_dropped: int
    audio_seconds: float
    audio_lost_seconds: float
    asr_skipped_seconds: float
    text_forced: int
    counters: Counters
    asr: TranscriptStats | None
    done: bool
    error: str | None
    stopped: dict = field(default_factory=dict)  # tracks that ended while the run went on: {"audio": 12.7}


def percentile(xs, q: float) -> float | None:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else None


class LiveRunner:
    ENGINE, ASR = "engine", "asr"

    def __init__(
        self,
        scorer: Scorer,
        video: VideoSource | None = None,
        audio: AudioSource | None = None,
        transcriber: Transcriber | None = None,
        options: LiveOptions | None = None,
        on_result: Callable[[WindowResult], None] | None = None,
        until: float | None = None,
    ):
        if video is None and audio is None:
            raise MerstreamError("nothing to score: no video and no audio source")
        self.scorer = scorer
        self.video, self.audio = video, audio
        self.opts = options or LiveOptions()
        self.on_result = on_result
        self.until = until  # stop after this many seconds of media
        self.sources: list[Source] = [s for s in (video, audio) if s is not None]
        self.realtime = any(s.realtime for s in self.sources)
        if self.realtime and not all(s.realtime for s in self.sources):
            raise MerstreamError("a live device cannot be mixed with a file played as fast as possible")
        has_text = audio is not None and transcriber is not None and "L" in scorer.modalities
        self.engine = Engine(scorer, self.opts.stream, has_video=video is not None, has_audio=audio is not None,
                             has_text=has_text, max_pending=self.opts.max_pending if self.realtime else None)
        info = getattr(audio, "info", None)
        if info is not None and not getattr(audio, "loop", False):  # a file's late audio track: no audio before it
            self.engine.audio_from = info.audio_start
        self.sr = self.engine.sr
        self.clock = Clock()
        self.frames = FrameRing(self.opts.frame_capacity)
        self.audio_ring = AudioRing(int(self.opts.audio_capacity * self.sr), self.sr)
        self.audio_ring.add_reader(self.ENGINE)
        self.transcript = RollingTranscript(transcriber, self.sr, min_chunk=self.opts.asr_min_chunk) if has_text else None
        if self.transcript is not None:
            self.audio_ring.add_reader(self.ASR)
        # shared state (transcriber -> scorer)
        self._tlock = threading.Lock()
        self._outbox: list[Word] = []
        self._text_until = 0.0
        self._pending: list[Word] = []
        # scorer-thread state
        self._vmarks: deque[tuple[float, float]] = deque()  # (frame time, captured_at)
        self._amarks: deque[tuple[float, float]] = deque()  # (audio end time, captured_at)
        self._capture_times: deque[float] = deque()  # for fps
        self.latencies: deque[float] = deque(maxlen=100_000)
        self.last: WindowResult | None = None
        self.windows_scored = 0
        self.audio_lost = 0
        self.asr_skipped = 0
        self.text_forced = 0
        self.error: str | None = None
        self.done = threading.Event()
        self._stop = threading.Event()
        self._user_stop = False
        self._threads: list[threading.Thread] = []

    # ---- control -------------------------------------------------------------------------
    def start(self) -> None:
        self.clock.start()
        if self.video is not None:
            self.video.start(self.clock, self.frames, self.until)
        if self.audio is not None:
            self.audio.start(self.clock, self.audio_ring, self.until)
        if self.transcript is not None:
            self._threads.append(threading.Thread(target=self._asr_loop, name="transcriber", daemon=True))
        self._threads.append(threading.Thread(target=self._score_loop, name="scorer", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop now (Ctrl-C, SIGTERM): windows already captured are still scored."""
        self._user_stop = True
        self._stop.set()
        for s in self.sources:
            s.stop()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def join(self) -> None:
        for t in self._threads:
            t.join()
        for s in self.sources:
            s.join(2.0)

    def run(self) -> None:
        """start(), then block until the sources end (or stop() is called from elsewhere)."""
        self.start()
        self.done.wait()
        self.join()

    # ---- the transcriber thread ----------------------------------------------------------
    def _asr_loop(self) -> None:
        rt, ring, src = self.transcript, self.audio_ring, self.audio
        chunk = None if self.realtime else int(self.opts.asr_min_chunk * self.sr)
        try:
            while not self._stop.is_set():
                if self.realtime and ring.available(self.ASR) > self.opts.asr_max_lag * self.sr:
                    skipped = ring.skip(self.ASR, keep=int(self.opts.asr_min_chunk * self.sr))
                    rt.skip(skipped)
                    self.asr_skipped += skipped
                read = ring.read(self.ASR, chunk)
                if read.lost:
                    rt.skip(read.lost)
                    self.asr_skipped += read.lost
                if len(read.samples):
                    rt.insert_audio_chunk(read.samples)
                ended = src.done.is_set() and ring.available(self.ASR) == 0
                if ended:
                    if src.error is None and not self._user_stop and not self._stop.is_set():
                        self._post(rt.finish())
                    return
                before = rt.stats.iterations
                self._post(rt.process_iter())
                if rt.stats.iterations == before and not len(read.samples):
                    ring.wait(0.05)
        except MerstreamError as e:
            self._fail(f"speech recognition stopped: {e}")
        except Exception as e:
            self._fail(f"speech recognition stopped: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}")

    def _post(self, up) -> None:
        with self._tlock:
            self._outbox.extend(up.words)
            self._text_until = max(self._text_until, up.until)
            self._pending = up.pending

    # ---- the scorer thread ---------------------------------------------------------------
    def _score_loop(self) -> None:
        try:
            while True:
                self._pull()
                if self._stop.is_set() or (self._sources_done() and not self._asr_running()):
                    break
                if self.realtime:
                    self._force_text()
                    self._shed_stale()
                self._emit(self.engine.process_iter())
                self.engine.encode_ahead()  # so a window waiting for its words scores fast when they come
                self._stop.wait(self.opts.poll)
            self._final()
        except MerstreamError as e:
            self._fail(str(e))
        except Exception as e:
            self._fail(f"scoring stopped: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
        finally:
            self._stop.set()
            for s in self.sources:
                s.stop()
            self.done.set()

    def _fail(self, msg: str) -> None:
        if self.error is None:
            self.error = msg
        self._stop.set()
        for s in self.sources:
            s.stop()

    def _sources_done(self) -> bool:
        """Finite sources (files) end by themselves; devices are stopped when the files end.
        Any source failing stops the run."""
        for s in self.sources:
            if s.done.is_set() and s.error is not None:
                self._fail(s.error)
                return True
        finite = [s for s in self.sources if s.finite]
        if finite and all(s.done.is_set() for s in finite):
            for s in self.sources:
                s.stop()
        if not all(s.done.is_set() for s in self.sources):
            return False
        return len(self.frames) == 0 and all(self.audio_ring.available(r) == 0 for r in (self.ENGINE,))

    def _asr_running(self) -> bool:
        return any(t.name == "transcriber" and t.is_alive() for t in self._threads)

    def _horizon(self) -> float:
        """Fast mode: how far video may run ahead of the audio and transcript (keeps the engine
        small while the transcriber catches up; the frame ring then makes the decoder wait)."""
        e = self.engine
        limits = []
        if e.has_audio and not (self.audio is not None and self.audio.done.is_set()):
            limits.append(e.audio_time)
        if e.has_text:
            limits.append(e.text_until)
        if not limits:
            return math.inf
        return min(limits) + self.opts.stream.window + self.opts.stream.hop

    def _pull(self, everything: bool = False) -> None:
        e = self.engine
        if self.video is not None:
            for f in self.frames.drain(None if self.realtime or everything else self._horizon()):
                e.insert_frame(f.t, f.rgb)
                self._vmarks.append((f.t, f.captured_at))
                self._capture_times.append(f.captured_at)
        if self.audio is not None:
            read = self.audio_ring.read(self.ENGINE)
            if read.lost:  # the scorer fell more than the ring behind: silence stands in
                e.insert_audio(np.zeros(read.lost, dtype=np.float32))
                self.audio_lost += read.lost
            if len(read.samples):
                e.insert_audio(read.samples)
            for pos, at in read.marks:
                self._amarks.append((pos / self.sr, at))
        # a track that ended (a file shorter than its other track) must not hold windows back
        # (Engine.end_video / end_audio, where the engine has them)
        if self.video is not None and self.video.done.is_set() and self.video.error is None and not len(self.frames):
            getattr(e, "end_video", lambda until=None: None)(self.video.end_time)
        if self.audio is not None and self.audio.done.is_set() and self.audio.error is None \
                and not self.audio_ring.available(self.ENGINE):
            getattr(e, "end_audio", lambda: None)()
        if self.transcript is not None:
            with self._tlock:
                words, until, pending = self._outbox, self._text_until, self._pending
                self._outbox = []
            if words or until > e.text_until:
                e.insert_words(words, until=until)
            if self.realtime:  # for windows forced past the deadline (played fast, windows wait instead)
                e.set_tentative(pending)
        now = self.clock.now()
        while self._capture_times and self._capture_times[0] < now - 2.0:
            self._capture_times.popleft()
        start = window_at(e.next_index, self.opts.stream.window, self.opts.stream.hop).start
        for marks in (self._vmarks, self._amarks):
            while len(marks) > 1 and marks[1][0] < start:
                marks.popleft()

    def _captured(self, t: float) -> float | None:
        """Clock time at which media time ``t`` had been captured by every source (None: not yet)."""
        out = -math.inf
        for marks, on in ((self._vmarks, self.video is not None), (self._amarks, self.audio is not None)):
            if not on:
                continue
            hit = next((at for mt, at in marks if mt >= t - 1e-6), None)
            if hit is None:
                return None
            out = max(out, hit)
        return out

    def _av_ready(self, end: float) -> bool:
        e = self.engine
        return (not e.has_video or e.video_time >= end) and (not e.has_audio or e.audio_time >= end)

    def _force_text(self) -> None:
        """Windows must not wait forever for the transcript: past the deadline, score with the
        words committed so far."""
        e = self.engine
        if not e.has_text:
            return
        now = self.clock.now()
        i, forced = e.next_index, None
        while True:
            w = window_at(i, self.opts.stream.window, self.opts.stream.hop)
            if e.text_until >= w.end or not self._av_ready(w.end):
                break
            cap = self._captured(w.end)
            if cap is None or now < cap + self.opts.text_deadline:
                break
            forced = w.end
            i += 1
        if forced is not None:
            self.text_forced += i - e.next_index
            e.insert_words([], until=forced)

    def _shed_stale(self) -> None:
        ready = self.engine.ready()
        if len(ready) < 2:
            return
        now = self.clock.now()
        stale = [w for w in ready[:-1] if (c := self._captured(w.end)) is not None and now - c > self.opts.stale_after]
        if stale:
            self.engine.drop_until(stale[-1].index + 1)

    def _emit(self, results: list[WindowResult]) -> None:
        if not results:
            return
        now = self.clock.now()
        for r in results:
            cap = self._captured(r.end)
            if cap is None:  # a clipped last window: its end is the end of what was captured
                cap = max([m[-1][1] for m in (self._vmarks, self._amarks) if m] or [now])
            r.latency = max(0.0, now - cap)
            self.latencies.append(r.latency)
            self.windows_scored += 1
            self.last = r
            if self.on_result is not None:
                self.on_result(r)

    def _final(self) -> None:
        """Score what is left. After a natural end (files ended, --duration reached) the
        transcript is finished and the last windows are clipped to the media as in `merstream
        file`; after stop() or a failure, windows up to the media captured so far are scored
        with the words committed so far."""
        natural = not self._user_stop and self.error is None and all(s.error is None for s in self.sources)
        for s in self.sources:
            s.stop()
        for s in self.sources:
            s.join(5.0)
        if not natural:
            self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()
        self._pull(everything=True)
        e = self.engine
        if self.video is not None and self.audio is not None and not natural:
            duration = min(e.video_time, e.audio_time)
        else:
            duration = self._duration()
        if e.has_text:
            e.insert_words([], until=math.inf)
        e.max_pending = None  # nothing is stale any more
        self._emit(e.process_iter())
        self._emit(e.finish(duration))

    def _known_end(self, t: float) -> float:
        """``t``, but no later than the container's duration (a track decoding past it has not
        outlived the others)."""
        info = getattr(self.video, "info", None) or getattr(self.audio, "info", None)
        loop = getattr(self.video, "loop", False) or getattr(self.audio, "loop", False)
        return min(t, info.duration) if info is not None and info.duration > 0 and not loop else t

    def _duration(self) -> float:
        """Where the media ended, as `merstream file` computes it."""
        ends = []
        frame_end = 0.0
        if self.video is not None:
            frame_end = self.video.end_time or 0.0
            ends.append(frame_end)
        if self.audio is not None:
            ends.append(self.audio.samples / self.sr)
        duration = max(ends)
        info = getattr(self.video, "info", None) or getattr(self.audio, "info", None)
        loop = getattr(self.video, "loop", False) or getattr(self.audio, "loop", False)
        if info is not None and info.duration > 0 and not loop:  # the container knows the length
            duration = min(duration, max(info.duration, frame_end))
        if self.until is not None:
            duration = min(duration, self.until)
        return duration

    # ---- view ----------------------------------------------------------------------------
    def snapshot(self) -> LiveSnapshot:
        lat = list(self.latencies)
        now = self.clock.now()
        times = list(self._capture_times)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 and times[-1] > times[0] else 0.0
        with self._tlock:
            pending = " ".join(w.text for w in self._pending)
        e = self.engine
        media = max(e.video_time if e.has_video else 0.0, e.audio_time if e.has_audio else 0.0)
        return LiveSnapshot(
            clock=now, media_time=media, fps=fps, last=self.last,
            transcript=self.transcript.text(last=30) if self.transcript else "",
            pending=pending,
            latency_last=lat[-1] if lat else None, latency_p50=percentile(lat[-200:], 50),
            latency_p95=percentile(lat[-200:], 95),
            windows_scored=self.windows_scored, windows_dropped=e.counters.windows_dropped,
            frames_captured=self.frames.total, frames_dropped=self.frames.dropped,
            audio_seconds=(self.audio.samples / self.sr) if self.audio else 0.0,
            audio_lost_seconds=self.audio_lost / self.sr, asr_skipped_seconds=self.asr_skipped / self.sr,
            text_forced=self.text_forced, counters=e.counters,
            asr=self.transcript.stats if self.transcript else None,
            done=self.done.is_set(), error=self.error, stopped=e.stopped(self._known_end(media)),
        )
