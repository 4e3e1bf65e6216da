"""Rolling transcription: faster-whisper on a sliding audio buffer, words committed by local agreement.

    rt = RollingTranscript(Transcriber())
    rt.insert_audio_chunk(samples)      # next 16 kHz mono chunk (contiguous from media time 0)
    up = rt.process_iter()              # -> TranscriptUpdate(words newly committed, until, pending)
    engine.insert_words(up.words, until=up.until)
    up = rt.finish()                    # end of stream: commit what is left (until = inf)
    rt.skip(n)                          # n samples were lost (backlog shed): continue after them

Each ``process_iter`` (once at least ``min_chunk`` s of new audio arrived) transcribes the buffer
with VAD and word timestamps. A word is *committed* when two consecutive hypotheses agree on it
(the same words from the buffer start: local agreement of 2); committed words are final and are
never emitted again. ``until`` says up to which media time the transcript is final: the start of
the first uncommitted word, or the processed audio minus ``tail_margin`` (a word may be cut at
the buffer's end).

Against silence and hallucination: Silero VAD (faster-whisper's ``vad_filter``) drops non-speech
before decoding; decoding is greedy at temperature 0 with a token budget proportional to the
buffer (no fallback re-decoding, no runaway loops); segments that whisper itself thinks are no
speech (``no_speech_prob`` high and ``avg_logprob`` low) or that hold more words than anyone
can say in their time (a hallucinated loop) are discarded; zero-length
words are dropped; words that fall inside the committed span are never emitted twice. No prompt
is passed by default (``prompt_chars=0``): with repetitive speech a prompt of the committed text
makes whisper copy it over and over.

The buffer is trimmed after each committed sentence (and, when nothing is pending, through the
silence that VAD finds after the committed words), and never grows past ``max_buffer`` s (older audio is then cut, committing the words
heard there), so each iteration stays cheap.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..asr import Transcriber, Word, confident

_NORM = re.compile(r"[^\w']+")
SENTENCE_END = (".", "?", "!")


def norm(text: str) -> str:
    return _NORM.sub("", text.lower())


@dataclass
class TranscriptUpdate:
    words: list[Word] = field(default_factory=list)  # committed by this call
    until: float = 0.0  # the transcript is final up to this media time
    pending: list[Word] = field(default_factory=list)  # latest uncommitted hypothesis (display only)


@dataclass
class TranscriptStats:
    iterations: int = 0
    asr_seconds: float = 0.0  # time spent in faster-whisper
    segments_rejected: int = 0  # no-speech / repetitive segments thrown away
    forced_commits: int = 0  # words committed because the buffer hit max_buffer


class RollingTranscript:
    def __init__(
        self,
        transcriber: Transcriber,
        sample_rate: int = 16000,
        min_chunk: float = 1.0,
        max_buffer: float = 15.0,
        tail_margin: float = 0.5,
        no_speech_threshold: float = 0.6,
        logprob_threshold: float = -1.0,
        max_words_per_second: float = 6.0,
        prompt_chars: int = 0,
        final_min_prob: float = 0.25,
    ):
        self.transcriber = transcriber
        self.sr = sample_rate
        self.min_chunk = min_chunk
        self.max_buffer = max_buffer
        self.tail_margin = tail_margin
        self.no_speech_threshold = no_speech_threshold
        self.logprob_threshold = logprob_threshold
        self.max_words_per_second = max_words_per_second
        self.prompt_chars = prompt_chars
        self.final_min_prob = final_min_prob
        self._prob: dict[int, float] = {}  # id(word) -> whisper's probability, for the last hypothesis
        self.buffer = np.zeros(0, dtype=np.float32)
        self.offset = 0.0  # media time of buffer[0]
        self.received = 0  # samples received in total
        self.processed = 0  # self.received at the last transcription
        self.committed: list[Word] = []  # all committed words (the tail is used as prompt)
        self.hypothesis: list[Word] = []  # uncommitted words of the last hypothesis
        self.until = 0.0
        self._speech: list[tuple[float, float]] = []  # VAD speech spans in the buffer (media times)
        self.stats = TranscriptStats()

    # ---- input ---------------------------------------------------------------------------
    def insert_audio_chunk(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.buffer = np.concatenate([self.buffer, x]) if len(self.buffer) else x.copy()
        self.received += len(x)

    @property
    def audio_end(self) -> float:
        return self.offset + len(self.buffer) / self.sr

    @property
    def committed_end(self) -> float:
        return self.committed[-1].end if self.committed else 0.0

    # ---- output --------------------------------------------------------------------------
    def process_iter(self) -> TranscriptUpdate:
        """Transcribe the buffer when ``min_chunk`` s of new audio arrived; commit agreed words."""
        if (self.received - self.processed) < self.min_chunk * self.sr:
            return TranscriptUpdate([], self.until, list(self.hypothesis))
        self.processed = self.received
        new = self._fresh(self._transcribe())
        agreed = 0
        while (agreed < len(new) and agreed < len(self.hypothesis)
               and norm(new[agreed].text) == norm(self.hypothesis[agreed].text)):
            agreed += 1
        done = new[:agreed]
        self.hypothesis = new[agreed:]
        done += self._limit_buffer()
        self.committed.extend(done)
        if len(self.committed) > 1000:  # only the tail is needed (prompt, display)
            del self.committed[:-500]
        self._trim()
        tail = self.audio_end - self.tail_margin
        until = min(self.hypothesis[0].start, tail) if self.hypothesis else tail
        self.until = max(self.until, min(until, self.audio_end))
        return TranscriptUpdate(done, self.until, list(self.hypothesis))

    def finish(self) -> TranscriptUpdate:
        """End of stream: transcribe what is left once more and commit it (words heard only this
        once must have a probability >= final_min_prob: the silent tail is where whisper invents)."""
        done: list[Word] = []
        if self.received > self.processed:  # heard once only: keep the words whisper is sure of
            self.processed = self.received
            done = [w for w in self._fresh(self._transcribe()) if self._prob.get(id(w), 1.0) >= self.final_min_prob]
        elif self.hypothesis:
            done = list(self.hypothesis)
        self.hypothesis = []
        self.committed.extend(done)
        self.until = math.inf
        return TranscriptUpdate(done, math.inf, [])

    def skip(self, samples: int) -> None:
        """Audio the caller could not deliver (a backlog shed, or overwritten): forget the buffer
        and the pending hypothesis and continue after the gap; nothing there will be transcribed."""
        if samples <= 0:
            return
        self.received += samples
        self.processed = self.received
        self.buffer = np.zeros(0, dtype=np.float32)
        self.offset = self.received / self.sr
        self.hypothesis = []
        self._speech = []
        self.until = max(self.until, self.offset)

    def text(self, last: int | None = None) -> str:
        words = self.committed if last is None else self.committed[-last:]
        return " ".join(w.text for w in words)

    # ---- internals -----------------------------------------------------------------------
    def _prompt(self) -> str | None:
        """Committed text before the buffer (whisper's context across trims)."""
        if self.prompt_chars <= 0:
            return None
        before = [w.text for w in self.committed if w.end <= self.offset + 1e-3]
        text = " ".join(before)[-self.prompt_chars :]
        return text or None

    def _transcribe(self) -> list[Word]:
        import time

        from faster_whisper.vad import VadOptions, get_speech_timestamps

        self._speech = []
        if len(self.buffer) < int(0.1 * self.sr):
            return []
        t = time.perf_counter()
        spans = get_speech_timestamps(self.buffer, VadOptions(min_silence_duration_ms=500, speech_pad_ms=200), self.sr)
        self._speech = [(self.offset + c["start"] / self.sr, self.offset + c["end"] / self.sr) for c in spans]
        if not spans:  # nothing but silence / noise: whisper is not asked (it would invent)
            self.stats.iterations += 1
            self.stats.asr_seconds += time.perf_counter() - t
            return []
        model = self.transcriber.model
        segments, _ = model.transcribe(
            self.buffer,
            language="en" if self.transcriber.english_only else None,
            beam_size=1,
            word_timestamps=True,
            vad_filter=True,
            condition_on_previous_text=False,
            initial_prompt=self._prompt(),
            temperature=0.0,  # no fallback re-decoding: a bad hypothesis is rejected below, not retried
            max_new_tokens=int(8 * len(self.buffer) / self.sr) + 16,  # speech is < 8 tokens/s; stops runaway loops
        )
        words = []
        self._prob = {}
        for seg in segments:  # lazy: decoding happens here
            if not self._plausible(seg):
                self.stats.segments_rejected += 1
                continue
            for w in seg.words or []:
                text = w.word.strip()
                if text and w.end > w.start:
                    words.append(Word(float(w.start) + self.offset, float(w.end) + self.offset, text))
                    self._prob[id(words[-1])] = float(w.probability)
        self.stats.iterations += 1
        self.stats.asr_seconds += time.perf_counter() - t
        return words

    def _plausible(self, seg) -> bool:
        """Whisper's own no-speech verdict, or more words than a person can say in the time (a
        hallucinated loop) reject a segment. (Not the compression ratio: people do repeat
        sentences, and whisper computes it over its whole 30 s window.)"""
        if seg.no_speech_prob > self.no_speech_threshold and seg.avg_logprob < self.logprob_threshold:
            return False
        if not confident(seg):  # not English (tiny.en makes English-looking words of it), or unclear
            return False
        words = seg.words or []
        if words:
            span = max(words[-1].end - words[0].start, 1.0)
            if len(words) / span > self.max_words_per_second:
                return False
        return True

    def _fresh(self, words: list[Word]) -> list[Word]:
        """Drop what was already committed: words that start before the end of the committed
        words (whisper re-hearing audio around the cut, often with shifted times). Time, not
        text, decides: people do repeat themselves."""
        ce = self.committed_end
        return [w for w in words if w.start >= ce - 0.1]

    def _limit_buffer(self) -> list[Word]:
        """Keep the buffer under max_buffer: cut its older half, committing the hypothesis words
        heard there (they were seen once; waiting longer would lose them)."""
        if len(self.buffer) / self.sr <= self.max_buffer:
            return []
        cut = self.audio_end - self.max_buffer / 2
        forced = [w for w in self.hypothesis if w.end <= cut]
        self.hypothesis = [w for w in self.hypothesis if w.end > cut]
        self.stats.forced_commits += len(forced)
        self._cut(max(cut, self.committed_end if not forced else forced[-1].end))
        return forced

    def _trim(self) -> None:
        """Cut the buffer after the last committed sentence (before any pending word); with
        nothing pending, cut the silence (by VAD) after the committed words, keeping the last
        second (a word may be starting there)."""
        if self.hypothesis:
            ends = [w.end for w in self.committed if w.end > self.offset and w.text.endswith(SENTENCE_END)]
            if ends:
                self._cut(min(ends[-1], self.hypothesis[0].start))
            return
        ce = self.committed_end
        speech = [start for start, end in self._speech if end > ce + 0.05]
        if not speech:
            self._cut(max(ce, self.audio_end - 1.0))
        else:
            self._cut(max(ce, speech[0] - 0.3))

    def _cut(self, t: float) -> None:
        n = int((t - self.offset) * self.sr)
        if n <= 0:
            return
        n = min(n, len(self.buffer))
        self.buffer = self.buffer[n:]
        self.offset += n / self.sr
