"""The streaming engine: push media in, pull scored windows out.

    engine = Engine(scorer, StreamConfig(window=2, hop=1), has_video=True, has_audio=True)
    engine.insert_frame(t, rgb)          # a video frame at media time t (seconds)
    engine.insert_audio(samples)         # the next chunk of 16 kHz mono audio (contiguous from 0)
    engine.insert_words(words, until=t)  # transcript words committed up to media time t
    engine.set_tentative(words)          # live: the recogniser's uncommitted hypothesis after them
    for result in engine.process_iter(): # every window whose media has fully arrived
        ...
    engine.ready() / engine.drop_until(i)  # live: peek at ready windows, shed stale ones
    engine.encode_ahead()                # encode media of windows still waiting for words (live, files)
    engine.finish(duration)              # end of stream: the remaining windows

Every frame sampled for scoring and every audio segment is encoded once and cached by its time,
so overlapping windows reuse embeddings; a transcript is re-encoded only when its text changes.
Models with ``face_crop`` keep frames at >= 160 px until encoded and see the grey face crop.
Raw frames, audio and cache entries older than the next window are evicted, so memory is bounded (a
file whose words are still being transcribed holds at most `MAX_AHEAD_WINDOWS` windows of media, see run_file).
The engine is single-threaded; threads live in the sources/live driver around it.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import OrderedDict, deque

import numpy as np

from ..asr import Word
from ..config import StreamConfig
from ..model.spectrogram import SpeakerNorm
from ..preprocess import FramePrep
from ..scorer import Scorer
from .windows import Counters, Window, WindowResult, window_at, window_count, words_in

TEXT_CACHE_SIZE = 256
TIE = 1e-9  # frame-to-sample distances closer than this are a tie
MIN_AUDIO = 0.1  # s: a segment holding less of a late-starting audio track (the rest is before it) has no audio
BATCH_WINDOWS = 32  # windows scored per batch (bounds memory when many are ready at once)


class Engine:
    def __init__(
        self,
        scorer: Scorer,
        stream: StreamConfig | None = None,
        has_video: bool = True,
        has_audio: bool = True,
        has_text: bool = True,
        max_pending: int | None = None,
        reuse: bool = True,
    ):
        self.scorer = scorer
        self.stream = stream or StreamConfig()
        mods = scorer.modalities
        self.use = {"V": has_video and "V" in mods, "A": has_audio and "A" in mods, "L": has_text and "L" in mods}
        self.has_video, self.has_audio, self.has_text = has_video, has_audio, has_text
        self.max_pending = max_pending  # live: when more windows are ready than this, drop the oldest
        self.reuse = reuse  # False: the naive baseline, every window re-encodes its own frames/segments
        self.video_done = not has_video  # a finished track no longer holds windows back
        self.ended: dict[str, float] = {}  # "video" / "audio": media time at which that track ended
        self.audio_done = not has_audio
        self.sr = scorer.audio_cfg.sample_rate
        self.seg_seconds = scorer.audio_cfg.segment_seconds
        self.seg_samples = int(round(self.seg_seconds * self.sr))
        self.audio_front = scorer.audio_front_end if self.use["A"] else None  # segments -> audio tower input
        if self.audio_front is not None:  # a Whisper tower's encoder is checked and loaded now, not at the first
            self.audio_front.load()  # segment (live: the first window's latency); a video-only run never loads it
        self.text_front = scorer.text_front_end if self.use["L"] else None  # a frozen sentence encoder (its
        if self.text_front is not None:  # weights already checked): loaded beside the first seconds of media,
            # not at the first words. Not a daemon: the interpreter waits for it at exit, as a process must
            # not end while a thread is inside onnxruntime's session set-up (a clip shorter than the load,
            # or an early error, aborted with "terminate called without an active exception")
            threading.Thread(target=self._load_quietly, args=(self.text_front,), name="merstream-text-load").start()
        # models with speaker normalisation (log-Mel images): the stream's voice so far, updated once per segment
        self.speaker = (SpeakerNorm(scorer.audio_cfg) if scorer.audio_cfg.speaker_mean is not None
                        and scorer.cfg.audio_tower.type == "clip" else None)
        self.speaker_offsets: dict[tuple[float, float], np.ndarray] = {}  # segment -> offset it was given
        self.prep = FramePrep(scorer.image_size, scorer.cfg.face_crop)
        self.counters = Counters()
        self.next_index = 0
        # media state
        self.frame_times: deque[float] = deque()
        self.frames: deque[np.ndarray] = deque()
        self.video_time = -math.inf
        self.video_start = math.inf  # the first frame's time: before it nothing is on screen (a late video track)
        self.video_end = math.inf  # the last frame is on screen until here (set by end_video)
        self.audio = np.zeros(0, dtype=np.float32)
        self.audio_offset = 0  # sample index of self.audio[0]
        self.audio_from = 0.0  # the audio track starts here (the zeros before it are no audio: a file's late track)
        self.words: list[Word] = []
        self.text_until = -math.inf
        self.tentative: list[Word] = []  # the recogniser's latest uncommitted words (live)
        self.encoded_ahead = -1  # index of the last window encode_ahead() went through
        self.ahead_keys: set = set()  # cache keys encode_ahead() filled that no window has used yet
        # caches
        self.frame_cache: dict[float, np.ndarray] = {}  # frame time -> embedding
        self.segment_cache: dict[tuple[float, float], np.ndarray] = {}  # (start, end) -> embedding
        self.text_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    # ---- input ---------------------------------------------------------------------------
    def insert_frame(self, t: float, rgb: np.ndarray) -> None:
        if t <= self.video_time:
            return
        if self.video_time == -math.inf:
            self.video_start = t
        self.frame_times.append(t)
        self.frames.append(self.prep.keep(rgb))
        self.video_time = t

    def insert_audio(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.audio = np.concatenate([self.audio, samples]) if len(self.audio) else samples.copy()

    @property
    def audio_time(self) -> float:
        return (self.audio_offset + len(self.audio)) / self.sr

    def insert_words(self, words: list[Word], until: float | None = None) -> None:
        self.words.extend(words)
        self.words.sort(key=lambda w: w.start)
        if until is not None:
            self.text_until = max(self.text_until, until)

    def set_tentative(self, words: list[Word]) -> None:
        """The recogniser's current hypothesis after its committed words (replaced on every call).
        Windows scored before their words are committed (live, past ``--text-deadline``) use these."""
        self.tentative = list(words)

    def _words(self) -> list[Word]:
        if not self.tentative:
            return self.words
        after = self.words[-1].end if self.words else -math.inf
        return self.words + [w for w in self.tentative if w.start >= after - 1e-3]

    # ---- output --------------------------------------------------------------------------
    def end_video(self, until: float | None = None) -> None:
        """No more frames will come. The last frame stays on screen until ``until`` (where the
        video ends; default: the last frame's own time); the windows after it score without vision."""
        self.video_done = True
        self.video_end = self.video_time if until is None else max(until, self.video_time)
        self.ended.setdefault("video", self.video_end)

    def end_audio(self) -> None:
        """No more audio will come."""
        self.audio_done = True
        self.ended.setdefault("audio", self.audio_time)

    def stopped(self, until: float) -> dict[str, float]:
        """The tracks that ended more than a hop before ``until`` (where the media ends, or now):
        {"audio": 12.68} when the audio stopped there and the video went on."""
        return {k: round(t, 3) for k, t in self.ended.items() if t < until - self.stream.hop}

    def _ready(self, w: Window) -> bool:
        """All media of ``w`` has arrived: every live track has passed its end, and the window lies
        within what some track has delivered (windows past the end of the media wait for finish)."""
        return self._media_arrived(w) and (not self.has_text or self.text_until >= w.end)

    def _media_arrived(self, w: Window) -> bool:
        arrived = max(self.video_time if self.has_video else -math.inf, self.audio_time if self.has_audio else -math.inf)
        return (
            arrived >= w.end
            and (self.video_done or self.video_time >= w.end)
            and (self.audio_done or self.audio_time >= w.end)
        )

    def ready(self) -> list[Window]:
        """The windows whose media has fully arrived and that are not scored yet (a peek)."""
        out = []
        i = self.next_index
        while True:
            w = window_at(i, self.stream.window, self.stream.hop)
            if not self._ready(w):
                return out
            out.append(w)
            i += 1

    def encode_ahead(self, limit: int = 2) -> int:
        """Encode, in one batch, the frames and audio segments of the next (at most ``limit``)
        windows whose media has arrived while their transcript has not (live; files while their
        transcript is still being made), so that scoring them later costs only the text and the
        head. Results do not change (the caches are keyed by media time). Returns how many windows
        were prepared."""
        if not self.reuse or not self.has_text:
            return 0
        n, i = 0, max(self.next_index, self.encoded_ahead + 1)
        frames: set[float] = set()
        segments: set[tuple[float, float]] = set()
        while n < limit:
            w = window_at(i, self.stream.window, self.stream.hop)
            if not self._media_arrived(w):
                break
            if self.text_until < w.end:
                frames.update(self._frames_for(w, w.end))
                segments.update(self._segments_for(w, w.end))
                n += 1
            self.encoded_ahead = i
            i += 1
        self._encode_frames(frames, ahead=True)
        self._encode_segments(segments, ahead=True)
        return n

    def drop_until(self, index: int) -> int:
        """Skip (and count as dropped) the unscored windows before ``index``: the live driver's
        way to shed stale work. Returns how many were dropped."""
        n = max(0, index - self.next_index)
        if n:
            self.next_index = index
            self.counters.windows_dropped += n
            self._evict(window_at(self.next_index, self.stream.window, self.stream.hop).start)
        return n

    def process_iter(self) -> list[WindowResult]:
        """Score every window whose media has fully arrived."""
        ready = self.ready()
        self.next_index += len(ready)
        if self.max_pending is not None and len(ready) > self.max_pending:
            self.counters.windows_dropped += len(ready) - self.max_pending
            ready = ready[-self.max_pending :]
        return self._score(ready, duration=None)

    def finish(self, duration: float | None = None) -> list[WindowResult]:
        """End of stream: score the remaining windows that start before the end of the media."""
        if duration is None:
            duration = max(self.video_time if self.has_video else 0.0, self.audio_time if self.has_audio else 0.0)
        n = window_count(duration, self.stream.window, self.stream.hop)
        ready = [window_at(i, self.stream.window, self.stream.hop) for i in range(self.next_index, n)]
        self.next_index = max(self.next_index, n)
        return self._score(ready, duration=duration)

    # ---- internals -----------------------------------------------------------------------
    def _nearest_frame(self, t: float) -> float | None:
        if not self.frame_times:
            return None
        times = self.frame_times
        i = bisect.bisect_left(times, t)
        best = None
        for j in (i - 1, i):  # the earlier frame wins a tie (within TIE seconds, so float noise can't flip it)
            if 0 <= j < len(times) and (best is None or abs(times[j] - t) < abs(best - t) - TIE):
                best = times[j]
        return best

    def _held_frame(self, t: float) -> float | None:
        """The frame on screen at ``t``: the last one at or before it (held until the next one, and
        the last one until the video ends)."""
        i = bisect.bisect_right(self.frame_times, t + TIE)
        return self.frame_times[i - 1] if i and t < self.video_end else None

    def _frames_for(self, w: Window, end: float) -> list[float]:
        """Cache keys (frame times) of the T_V frames nearest the window's sample times; where no
        frame is that near (a low frame rate, a held last frame), the frame on screen then."""
        if not self.use["V"]:
            return []
        n = self.scorer.cfg.num_frames
        span = w if end >= w.end else Window(w.index, w.start, end)  # the last window: its real span
        tol = (span.end - span.start) / (2 * n)  # half a sampling step: farther frames belong elsewhere
        keys = []
        for t in span.frame_times(n):
            if t < self.video_start - tol:  # the video has not started yet
                continue
            k = self._nearest_frame(t)
            if k is None or not w.start - tol <= k < end + tol:
                k = self._held_frame(t)
            if k is not None:
                keys.append(k)
        return keys

    def _segments_for(self, w: Window, end: float) -> list[tuple[float, float]]:
        """(start, end) of the window's audio segments, cut at the window's end (zero-padded later)."""
        if not self.use["A"]:
            return []
        until = min(end, self.audio_time)
        return [(s, e) for s in w.segment_starts(self.seg_seconds, until)
                if s < until and (e := round(min(s + self.seg_seconds, w.end), 6)) >= self.audio_from + MIN_AUDIO]

    def _score(self, windows: list[Window], duration: float | None) -> list[WindowResult]:
        """Score ``windows`` in batches of at most BATCH_WINDOWS (one each for the naive baseline),
        then evict what no later window can use."""
        step = BATCH_WINDOWS if self.reuse else 1
        results = []
        for i in range(0, len(windows), step):
            if not self.reuse:
                self.frame_cache.clear()
                self.segment_cache.clear()
                self.text_cache.clear()
            results += self._score_batch(windows[i : i + step], duration)
        if windows:
            self._evict(window_at(self.next_index, self.stream.window, self.stream.hop).start)
        return results

    def _score_batch(self, windows: list[Window], duration: float | None) -> list[WindowResult]:
        plans = []
        words = self._words()
        for w in windows:
            end = min(w.end, duration) if duration is not None else w.end
            text = words_in(words, w.start, end, self.stream.text_left_context) if self.use["L"] else ""
            plans.append((w, end, self._frames_for(w, end), self._segments_for(w, end), text))
        # encoded once per batch; every use by a window past the first counts as a cache hit
        self._encode_frames({k for p in plans for k in p[2]}, uses=sum(len(p[2]) for p in plans))
        self._encode_segments({s for p in plans for s in p[3]}, uses=sum(len(p[3]) for p in plans))
        self._encode_texts({p[4] for p in plans if p[4]}, uses=sum(1 for p in plans if p[4]))

        d = self.scorer.embed_dim
        b = len(plans)
        pooled = {m: np.zeros((b, d), dtype=np.float32) for m in self.scorer.modalities}
        present = {m: np.zeros(b, dtype=np.float32) for m in self.scorer.modalities}
        for i, (w, end, fkeys, segs, text) in enumerate(plans):
            if fkeys:
                pooled["V"][i] = np.mean([self.frame_cache[k] for k in fkeys], axis=0)
                present["V"][i] = 1
            if segs:
                pooled["A"][i] = np.mean([self.segment_cache[s] for s in segs], axis=0)
                present["A"][i] = 1
            if text:
                pooled["L"][i] = self.text_cache[text]
                present["L"][i] = 1
        probs = self.scorer.score(pooled, present)
        preds = self.scorer.predict(probs)
        labels = self.scorer.labels
        results = []
        for i, (w, end, fkeys, segs, text) in enumerate(plans):
            mods = "".join(m for m in self.scorer.modalities if present[m][i] > 0)
            if mods:
                scores = {lab: float(probs[i, j]) for j, lab in enumerate(labels)}
                top, predicted = labels[int(np.argmax(probs[i]))], [lab for j, lab in enumerate(labels) if preds[i, j]]
            else:  # nothing to score (no frame, no audio, no words): no scores, never a label
                scores, top, predicted = dict.fromkeys(labels), None, []
            results.append(
                WindowResult(
                    index=w.index, start=w.start, end=end, scores=scores, labels=predicted, top=top, text=text,
                    modalities=mods, frames=len(fkeys), segments=len(segs),
                )
            )
        self.counters.windows_scored += len(results)
        return results

    def _cache_hits(self, keys: set, missing: list, ahead: bool, uses: int | None) -> int:
        """How many of the ``uses`` of ``keys`` by windows (default one each) count as cache hits.
        Keys encode_ahead() encoded count at their first use by a window as if encoded then (not as
        hits), so the counters match a run without it."""
        if ahead:
            self.ahead_keys.update(missing)
            return 0
        first_use = keys & self.ahead_keys
        self.ahead_keys -= first_use
        return (len(keys) if uses is None else uses) - len(missing) - len(first_use)

    def _encode_frames(self, keys: set[float], ahead: bool = False, uses: int | None = None) -> None:
        missing = sorted(k for k in keys if k not in self.frame_cache)
        self.counters.frame_cache_hits += self._cache_hits(keys, missing, ahead, uses)
        if not missing:
            return
        idx = {t: i for i, t in enumerate(self.frame_times)}
        batch = self.prep.to_input([self.frames[idx[k]] for k in missing])
        for k, e in zip(missing, self.scorer.encode_frames(batch)):
            self.frame_cache[k] = e
        self.counters.frames_encoded += len(missing)

    def _segment_audio(self, key: tuple[float, float]) -> np.ndarray:
        a = max(int(round(key[0] * self.sr)) - self.audio_offset, 0)
        n = min(int(round((key[1] - key[0]) * self.sr)), self.seg_samples)
        seg = self.audio[a : a + n]
        return np.pad(seg, (0, self.seg_samples - len(seg)))

    def _encode_segments(self, keys: set[tuple[float, float]], ahead: bool = False, uses: int | None = None) -> None:
        missing = sorted(s for s in keys if s not in self.segment_cache)
        self.counters.segment_cache_hits += self._cache_hits(keys, missing, ahead, uses)
        if not missing:
            return
        images = self.audio_front(np.stack([self._segment_audio(s) for s in missing]))
        if self.speaker is not None:
            images = self._normalise_speaker(missing, images)
        for s, e in zip(missing, self.scorer.encode_audio(images)):
            self.segment_cache[s] = e
        self.counters.segments_encoded += len(missing)

    def _normalise_speaker(self, keys: list[tuple[float, float]], images: np.ndarray) -> np.ndarray:
        """The first time a segment is seen (``keys`` are in time order) it joins the speaker
        estimate and gets the estimate so far; later encodings of it (the naive baseline) reuse that
        offset. With one segment per window (the default: window = segment length) segments arrive in
        time order however windows are batched, so file, live and naive runs agree; with longer
        windows a batch may add a later segment before an earlier one is normalised."""
        out = np.empty_like(images)
        for i, key in enumerate(keys):
            if key not in self.speaker_offsets:
                self.speaker.update(images[i: i + 1])
                self.speaker_offsets[key] = self.speaker.offset
            out[i] = images[i] + self.speaker_offsets[key][None, :, None]
        return out

    @staticmethod
    def _load_quietly(front) -> None:
        """Load in the background; a failure is raised again, as a one-line error, by the first use."""
        try:
            front.load()
        except Exception:
            pass

    def _encode_texts(self, texts: set[str], uses: int | None = None) -> None:
        missing = sorted(t for t in texts if t not in self.text_cache)
        self.counters.text_cache_hits += (len(texts) if uses is None else uses) - len(missing)
        for t in texts - set(missing):
            self.text_cache.move_to_end(t)
        if missing:
            for t, e in zip(missing, self.scorer.encode_text(self.scorer.text_inputs(missing))):
                self.text_cache[t] = e
            self.counters.texts_encoded += len(missing)
        while len(self.text_cache) > TEXT_CACHE_SIZE:
            self.text_cache.popitem(last=False)

    def _evict(self, next_start: float) -> None:
        """Drop media and cache entries no later window can use."""
        keep_from = next_start - 0.5
        while len(self.frame_times) > 1 and self.frame_times[1] < keep_from:
            self.frame_times.popleft()
            self.frames.popleft()
        for k in [k for k in self.frame_cache if k < keep_from]:
            del self.frame_cache[k]
        for s in [s for s in self.segment_cache if s[0] < next_start]:
            del self.segment_cache[s]
        self.speaker_offsets = {s: o for s, o in self.speaker_offsets.items() if s[0] >= next_start}
        if self.ahead_keys:
            self.ahead_keys = {k for k in self.ahead_keys if k in self.frame_cache or k in self.segment_cache}
        cut = min(int(next_start * self.sr) - self.audio_offset, len(self.audio))
        if cut > 0:
            self.audio = self.audio[cut:]
            self.audio_offset += cut
        lo = next_start - self.stream.text_left_context - 30.0
        if self.words and self.words[0].end < lo:
            self.words = [w for w in self.words if w.end >= lo]
