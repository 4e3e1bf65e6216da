"""Media sources for the live engine: a camera, a video file or stream URL, a microphone, an
audio file. Each runs in its own thread and writes into a ring buffer (merstream.engine.buffers),
timestamped by one shared monotonic :class:`Clock` (media time = clock time since start).

    src = CameraSource(0)                 # or VideoFileSource(path_or_url, realtime=True)
    src.open()                            # device / file checks: MerstreamError with one line
    src.start(clock, ring, until=None)    # the thread runs until EOF, ``until`` s, stop() or an error
    src.stop(); src.join()
    src.error                             # None, or why the source stopped early (one line)
    src.end_time                          # media time at which the stream ended

File sources are paced by the clock (a frame with time t is released at clock time t) when
``realtime``; otherwise they run as fast as the consumers allow (the ring buffer waits). Their
media times are the decoder's (the same frames and samples as ``merstream file``). A camera's
frames are stamped with the clock when read; a microphone's first sample is placed at the clock
time it was captured (zeros before it), then samples are contiguous.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from typing import Callable

import numpy as np

from ..errors import MerstreamError
from ..preprocess import shrink
from .buffers import AudioRing, Frame, FrameRing

SAMPLE_RATE = 16000


class Clock:
    """The one monotonic clock of a live run (seconds since :meth:`start`)."""

    def __init__(self) -> None:
        self.t0: float | None = None

    def start(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return 0.0 if self.t0 is None else time.monotonic() - self.t0

    def sleep_until(self, t: float, stop: threading.Event) -> bool:
        """Wait until clock time ``t``; False when ``stop`` was set meanwhile."""
        delay = t - self.now()
        if delay > 0:
            return not stop.wait(delay)
        return not stop.is_set()


class Source:
    """One media source running in its own thread. Subclasses implement ``_run`` (and ``open`` /
    ``_close`` for devices)."""

    kind = "video"  # "video" writes Frames into a FrameRing, "audio" samples into an AudioRing
    realtime = True
    finite = False  # ends by itself (a file); devices run until stopped

    def __init__(self, name: str):
        self.name = name
        self.error: str | None = None
        self.end_time: float | None = None
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.clock = Clock()
        self.sink = None
        self.until: float | None = None

    @property
    def fps(self) -> float | None:
        return None

    def open(self) -> None:
        """Acquire the device or check the file (raises MerstreamError)."""

    def _close(self) -> None:
        """Release the device (called in the source thread when it ends)."""

    def _run(self) -> None:
        raise NotImplementedError

    def start(self, clock: Clock, sink, until: float | None = None) -> None:
        self.clock, self.sink, self.until = clock, sink, until
        self._thread = threading.Thread(target=self._main, name=f"source-{self.name}", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self._run()
        except MerstreamError as e:
            self.error = str(e)
        except Exception as e:  # a device or library failure: one line, the run stops cleanly
            first = (str(e).splitlines() or [""])[0]
            self.error = f"{self.name}: {type(e).__name__}: {first}"
        finally:
            try:
                self._close()
            finally:
                if self.end_time is None:
                    self.end_time = self._media_end()
                self.sink.close()
                self.done.set()

    def _media_end(self) -> float:
        return self.clock.now()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


class VideoSource(Source):
    kind = "video"

    def __init__(self, name: str, frame_size: int | None = None,
                 on_frame: Callable[[float, np.ndarray], None] | None = None):
        super().__init__(name)
        self.frame_size = frame_size  # frames are shrunk (short side) before buffering
        self.on_frame = on_frame  # tap for the raw RGB frame (display, recording)
        self.frames = 0
        self.last_t = -math.inf

    def _emit(self, t: float, rgb: np.ndarray) -> bool:
        if self.on_frame is not None:
            self.on_frame(t, rgb)
        small = shrink(rgb, self.frame_size) if self.frame_size else rgb
        ok = self.sink.put(Frame(t, small, self.clock.now()), block=not self.realtime, stop=self._stop)
        self.frames += 1
        self.last_t = t
        return ok


def silence_opencv(cv2) -> None:
    """OpenCV logs errors only to its own logger: silence it (``cv2.utils.logging`` since 4.x; the
    top-level ``cv2.setLogLevel`` of older wheels is gone in 4.14)."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None and hasattr(logging, "setLogLevel"):
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(0)


class CameraSource(VideoSource):
    """An OpenCV capture device (an index such as 0, or anything cv2.VideoCapture opens). Frames
    are stamped with the clock when read. A device that stops delivering frames is retried
    ``retries`` times (reopened half way), then the source stops with an error."""

    def __init__(self, device: int | str = 0, retries: int = 6, retry_wait: float = 0.25, **kw):
        super().__init__(f"camera {device}", **kw)
        self.device = device
        self.retries = retries
        self.retry_wait = retry_wait
        self.cap = None
        self._fps: float | None = None

    @property
    def fps(self) -> float | None:
        return self._fps

    def _capture(self):
        import cv2

        silence_opencv(cv2)  # a missing camera is reported as one merstream error, not OpenCV's log lines
        return cv2.VideoCapture(self.device)

    def open(self) -> None:
        self.cap = self._capture()
        if not self.cap.isOpened():
            self.cap.release()
            what = f"at index {self.device}" if isinstance(self.device, int) else repr(self.device)
            raise MerstreamError(f"no camera {what} (OpenCV could not open it; check the index and permissions)")
        ok, _ = self.cap.read()
        if not ok:
            self.cap.release()
            raise MerstreamError(f"camera {self.device} opened but delivers no frames")
        import cv2

        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if fps and 0 < fps < 1000 else None

    def _close(self) -> None:
        if self.cap is not None:
            self.cap.release()

    def _media_end(self) -> float:
        return self.last_t if self.frames else 0.0

    def _run(self) -> None:
        import cv2

        failures = 0
        while not self.stopping:
            ok, bgr = self.cap.read()
            t = self.clock.now()
            if not ok or bgr is None:
                failures += 1
                if failures > self.retries:
                    self.error = f"camera {self.device} stopped delivering frames at {t:.1f} s (unplugged?)"
                    return
                if failures == self.retries // 2 and isinstance(self.device, int):  # try reopening the device once
                    self.cap.release()
                    self.cap = self._capture()
                self._stop.wait(self.retry_wait)
                continue
            failures = 0
            if self.until is not None and t >= self.until:
                self.end_time = self.until
                return
            if not self._emit(t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)):
                return


class VideoFileSource(VideoSource):
    """The video track of a file or stream URL, at its own timestamps. ``realtime`` paces it by
    the clock; ``loop`` replays a file forever with times continuing (one period = the container
    duration)."""

    def __init__(self, path: str, realtime: bool = True, loop: bool = False, **kw):
        super().__init__(str(path), **kw)
        self.path = str(path)
        self.realtime = realtime
        self.loop = loop
        self.finite = not loop
        self.info = None

    @property
    def fps(self) -> float | None:
        return self.info.fps if self.info else None

    def open(self) -> None:
        from ..media import probe

        self.info = probe(self.path)
        if not self.info.has_video:
            raise MerstreamError(f"{self.path} has no video stream")
        if self.loop and not self.info.duration > 0:
            raise MerstreamError(f"{self.path}: cannot loop a stream of unknown duration")

    def _run(self) -> None:
        from ..media import iter_frames

        offset = 0.0
        period = self.info.duration
        frame_step = 1.0 / self.info.fps if self.info.fps else 0.0
        while True:
            last = None
            for t, rgb in iter_frames(self.path):
                if self.loop and t >= period:
                    break
                t += offset
                if self.until is not None and t >= self.until:
                    self.end_time = self.until
                    return
                if self.realtime and not self.clock.sleep_until(t, self._stop):
                    return
                if self.stopping or not self._emit(t, rgb):
                    return
                last = t
            if not self.loop or last is None:
                break
            offset += period
        # where the stream ended (as merstream file computes it): last frame + one frame
        self.end_time = (self.last_t + frame_step) if self.frames else 0.0

    def _media_end(self) -> float:
        return self.last_t if self.frames else 0.0


class AudioSource(Source):
    kind = "audio"
    sample_rate = SAMPLE_RATE

    def __init__(self, name: str):
        super().__init__(name)
        self.samples = 0  # samples written

    def _write(self, x: np.ndarray) -> bool:
        if self.until is not None:
            room = int(round(self.until * self.sample_rate)) - self.samples
            x = x[: max(room, 0)]
        if len(x):
            if not self.sink.write(x, self.clock.now(), block=not self.realtime, stop=self._stop):
                return False
            self.samples += len(x)
        return not (self.until is not None and self.samples >= int(round(self.until * self.sample_rate)))

    def _media_end(self) -> float:
        return self.samples / self.sample_rate


class AudioFileSource(AudioSource):
    """The audio track of a file or stream URL as 16 kHz mono; ``realtime`` releases each chunk
    when the clock reaches its end; ``loop`` replays it (each period padded or cut to the
    container duration, so a looping video and its audio stay in step)."""

    def __init__(self, path: str, realtime: bool = True, loop: bool = False, track: int | None = None):
        super().__init__(f"audio {path}")
        self.path = str(path)
        self.track = track
        self.realtime = realtime
        self.loop = loop
        self.finite = not loop
        self.info = None

    def open(self) -> None:
        from ..media import probe

        self.info = probe(self.path, self.track)
        self.track = self.info.audio_track
        if not self.info.has_audio:
            raise MerstreamError(f"{self.path} has no audio stream")
        if self.loop and not self.info.duration > 0:
            raise MerstreamError(f"{self.path}: cannot loop a stream of unknown duration")

    def _run(self) -> None:
        from ..media import iter_audio

        period = int(round(self.info.duration * self.sample_rate))
        while True:
            done = 0
            for chunk in iter_audio(self.path, self.sample_rate, self.track):
                if self.loop:
                    chunk = chunk[: max(period - done, 0)]
                    if not len(chunk):  # one period played
                        break
                if self.realtime and not self.clock.sleep_until((self.samples + len(chunk)) / self.sample_rate, self._stop):
                    return
                done += len(chunk)
                if self.stopping or not self._write(chunk):
                    return
            if not self.loop:
                break
            if done < period:  # keep every period the same length
                if not self._write(np.zeros(period - done, dtype=np.float32)):
                    return
        self.end_time = self.samples / self.sample_rate


class MicSource(AudioSource):
    """A microphone through sounddevice (PortAudio): 16 kHz mono float32, delivered by the
    PortAudio callback into a queue that the source thread moves into the ring. A device that
    cannot record at 16 kHz is opened at its own rate and resampled."""

    realtime = True

    def __init__(self, device: int | str | None = None, block_seconds: float = 0.05, stall_seconds: float = 3.0):
        super().__init__(f"microphone {device if device is not None else '(default)'}")
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        self.device = device
        self.block_seconds = block_seconds
        self.stall_seconds = stall_seconds
        self.stream = None
        self.rate = SAMPLE_RATE
        self._q: queue.Queue = queue.Queue(maxsize=400)
        self.overflows = 0  # PortAudio input overflows + chunks the queue had no room for
        self._resampler = None

    def open(self) -> None:
        try:
            import sounddevice as sd
        except OSError as e:  # the PortAudio library itself is missing
            raise MerstreamError(f"no audio input: PortAudio is not available ({str(e).splitlines()[0]})") from None
        try:
            info = sd.query_devices(self.device, "input")
        except (ValueError, sd.PortAudioError) as e:
            what = f"{self.device!r}" if self.device is not None else "(default)"
            raise MerstreamError(f"no microphone {what}: {str(e).splitlines()[0]}") from None
        self.name = f"microphone {info['name']}"
        try:
            self.stream = self._stream(sd, SAMPLE_RATE)
        except sd.PortAudioError:
            rate = int(info.get("default_samplerate") or 48000)
            try:
                self.stream = self._stream(sd, rate)
            except sd.PortAudioError as e:
                raise MerstreamError(f"cannot record from {info['name']!r}: {str(e).splitlines()[0]}") from None
            self.rate = rate
            self._resampler = _Resampler(rate, SAMPLE_RATE)

    def _stream(self, sd, rate: int):
        return sd.InputStream(
            device=self.device, channels=1, samplerate=rate, dtype="float32",
            blocksize=int(rate * self.block_seconds), callback=self._callback,
        )

    def _callback(self, indata, frames, time_info, status) -> None:  # PortAudio's thread
        if status.input_overflow:
            self.overflows += 1
        try:
            self._q.put_nowait(indata[:, 0].copy())
        except queue.Full:
            self.overflows += 1

    def _close(self) -> None:
        if self.stream is not None:
            try:
                self.stream.stop()
                self.stream.close()
            except Exception:
                pass

    def _run(self) -> None:
        self.stream.start()
        first = True
        last_audio = self.clock.now()
        while not self.stopping:
            try:
                x = self._q.get(timeout=0.2)
            except queue.Empty:
                if self.clock.now() - last_audio > self.stall_seconds:
                    self.error = f"{self.name} stopped delivering audio at {self.clock.now():.1f} s (unplugged?)"
                    return
                continue
            last_audio = self.clock.now()
            if self._resampler is not None:
                x = self._resampler(x)
            if first:  # place the first sample at the clock time it was captured
                first = False
                lead = int(round((last_audio - len(x) / SAMPLE_RATE) * SAMPLE_RATE))
                if lead > 0 and not self._write(np.zeros(lead, dtype=np.float32)):
                    return
            if not self._write(x):
                return


class _Resampler:
    """Streaming resampler (libswresample through PyAV) for microphones without 16 kHz."""

    def __init__(self, src_rate: int, dst_rate: int):
        import av

        self.av = av
        self.src_rate = src_rate
        self.r = av.AudioResampler(format="flt", layout="mono", rate=dst_rate)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        frame = self.av.AudioFrame.from_ndarray(np.ascontiguousarray(x, dtype=np.float32).reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self.src_rate
        outs = [o.to_ndarray().reshape(-1) for o in self.r.resample(frame)]
        return np.concatenate(outs) if outs else np.zeros(0, dtype=np.float32)


def is_camera_index(spec: str) -> bool:
    return spec.strip().isdigit()


__all__ = [
    "Clock", "Source", "VideoSource", "AudioSource", "CameraSource", "VideoFileSource",
    "AudioFileSource", "MicSource", "AudioRing", "FrameRing", "is_camera_index",
]
