"""`merstream live`: score a camera (or a video file / stream URL) and a microphone continuously.

The threaded driver is merstream.engine.live; this module picks the sources from the options,
shows a rich terminal view, optionally an OpenCV window (--show) and an annotated video
(--record), and appends every scored window to a JSONL/CSV timeline as soon as it is scored, so
Ctrl-C or SIGTERM loses nothing already scored.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Optional

import typer

from .cli_app import app, console, fail, note, parse_labels, speech_off


def _video_source(camera: str, realtime: bool, loop: bool, frame_size: int, on_frame):
    from .engine.sources import CameraSource, VideoFileSource, is_camera_index
    from .media import is_url

    if is_camera_index(camera):
        if not realtime:
            fail("--fast is for files: a camera delivers frames in real time")
        if loop:
            fail("--loop is for files, not a camera")
        return CameraSource(int(camera), frame_size=frame_size, on_frame=on_frame)
    if not is_url(camera) and not Path(camera).exists():
        fail(f"--camera {camera}: no such file, and not a camera index (0, 1, ...) or a stream URL")
    return VideoFileSource(camera, realtime=realtime, loop=loop, frame_size=frame_size, on_frame=on_frame)


@app.command("live")
def live_cmd(
    camera: str = typer.Option("0", "--camera", "-c", help="Camera index (0, 1, ...), a video file or a stream URL (rtsp://, http://)."),
    no_camera: bool = typer.Option(False, "--no-camera", help="Audio only (microphone or --audio)."),
    mic: Optional[str] = typer.Option(None, "--mic", help="Microphone: a device index or name (see `python -m sounddevice`). Failing to open it is an error."),
    no_mic: bool = typer.Option(False, "--no-mic", help="Do not record from a microphone (a video file still brings its own audio track)."),
    audio: Optional[str] = typer.Option(None, "--audio", help="Take the audio from this file or URL instead of a microphone."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Directory for the live-<time>.jsonl/.csv timeline (and .png)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint (dir or .safetensors) or ONNX export dir. Default: the embedded model."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated labels to score (any text)."),
    clip: Optional[str] = typer.Option(None, "--clip", help="Zero-shot mode: open_clip architecture (e.g. ViT-B-32)."),
    clip_weights: Optional[str] = typer.Option(None, "--clip-weights", help="Zero-shot mode: open_clip pretrained tag or local weights file."),
    backend: str = typer.Option("auto", help="auto | torch | onnx"),
    window: float = typer.Option(2.0, help="Window length in seconds."),
    hop: float = typer.Option(1.0, help="Seconds between window starts."),
    realtime: bool = typer.Option(True, "--realtime/--fast", help="Files: play at real time, or as fast as the machine allows."),
    loop: bool = typer.Option(False, "--loop", help="Files: replay forever (stop with Ctrl-C or --duration)."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds of media."),
    asr_model: str = typer.Option("tiny.en", "--asr-model", help="faster-whisper model name or local directory."),
    no_asr: bool = typer.Option(False, "--no-asr", help="Skip speech recognition (no language modality)."),
    language: str = typer.Option("en", "--language", help="Language spoken (ISO 639-1 code). The text tower reads English: any other language turns speech recognition off, with a note."),
    text_deadline: float = typer.Option(0.5, "--text-deadline", help="Real time: seconds a window waits for committed words; then it is scored with the words so far plus the recogniser's current hypothesis."),
    show: bool = typer.Option(False, "--show", help="Show the video with an overlay in an OpenCV window (q quits)."),
    record: Optional[Path] = typer.Option(None, "--record", help="Write the annotated video to this file (.mp4)."),
    plot: bool = typer.Option(True, help="Write the PNG plot at the end."),
    audio_track: Optional[int] = typer.Option(None, "--audio-track", min=0, help="Audio track N of the file (0-based, as ffmpeg's -map 0:a:N). Default: the track marked default, else the first."),
):
    """Score a camera and microphone (or a file / stream) live; append the timeline as it goes."""
    from .config import StreamConfig
    from .engine.sources import AudioFileSource, MicSource
    from .errors import MerstreamError
    from .live_view import Recorder, check_display, render, status_line, window_line
    from .media import is_url

    # ---- options ---------------------------------------------------------------------------
    no_asr = speech_off(language, no_asr)
    if backend not in ("auto", "torch", "onnx"):
        fail(f"--backend must be auto, torch or onnx (got {backend!r})")
    if mic is not None and no_mic:
        fail("--mic and --no-mic contradict each other")
    if audio is not None and mic is not None:
        fail("pass either --audio FILE or --mic DEVICE, not both")
    if duration is not None and not duration > 0:
        fail("--duration must be > 0 seconds")
    if no_camera and (show or record):
        fail("--show and --record need a video source (drop --no-camera)")
    if record is not None:
        Recorder.check_path(record)  # before any device opens or a timeline starts
    stream = StreamConfig(window=window, hop=hop)
    if text_deadline < 0:
        fail("--text-deadline must be >= 0 seconds")
    if show:
        check_display()
    if audio is not None and not is_url(audio) and not Path(audio).exists():
        fail(f"--audio {audio}: no such file")

    # ---- sources ---------------------------------------------------------------------------
    latest = {"rgb": None}
    recorder: Recorder | None = None

    def on_frame(t, rgb):
        latest["rgb"] = rgb
        if recorder is not None:
            recorder.add(t, rgb)

    # devices and files are checked first: a missing camera is reported before any model loads
    video = None if no_camera else _video_source(camera, realtime, loop, None, on_frame if (show or record) else None)
    if video is not None:
        video.open()
    audio_src = None
    file_audio = audio or (camera if video is not None and getattr(video, "info", None) is not None and video.info.has_audio else None)
    if audio_track is not None and (file_audio is None or mic is not None):
        fail("--audio-track picks a track of a file's audio (--camera FILE or --audio FILE, without --mic)")
    if file_audio is not None and mic is None:
        audio_src = AudioFileSource(file_audio, realtime=realtime, loop=loop, track=audio_track)
        audio_src.open()
        if audio_src.info.audio_track_note():
            note(audio_src.info.audio_track_note())
    elif not no_mic:
        if not realtime:
            fail("--fast is for files: a microphone records in real time (add --no-mic)")
        audio_src = MicSource(mic)
        try:
            audio_src.open()
        except MerstreamError as e:
            if mic is not None:
                raise
            note(f"{e}: continuing without audio (pass --no-mic to silence this)")
            audio_src = None
    if video is None and audio_src is None:
        fail("nothing to score: no video (--no-camera) and no audio")
    if audio_src is None and video is not None:
        note("no audio: scoring video frames only")
    label_list = parse_labels(labels)
    # heavy imports (torch, the models) only once the devices are known to work
    from .asr import Transcriber
    from .engine.live import LiveOptions, LiveRunner
    from .models import resolve_scorer
    from .preprocess import stored_frame_side
    from .sinks import TimelineWriter, summary

    options = LiveOptions(stream=stream, text_deadline=text_deadline)
    scorer = resolve_scorer(model, label_list, clip, clip_weights, backend)
    if scorer.notice:
        note(scorer.notice)
    if video is not None:
        video.frame_size = stored_frame_side(scorer.image_size, scorer.cfg.face_crop)  # shrunk in the capture thread
    transcriber = None
    if audio_src is not None and not no_asr and "L" in scorer.modalities:
        transcriber = Transcriber(asr_model)
    # the engine loads what the run uses (a Whisper encoder when there is audio) before any output;
    # on_result writes to the sinks made below, before the runner starts
    runner = LiveRunner(scorer, video, audio_src, transcriber, options, on_result=lambda r: on_result(r), until=duration)

    # ---- sinks -----------------------------------------------------------------------------
    stem = "live-" + time.strftime("%Y%m%d-%H%M%S")
    src_name = "none" if video is None else str(Path(camera).resolve()) if Path(camera).is_file() else camera
    writer = TimelineWriter(out, stem, scorer.labels, meta={
        "source": src_name, "audio": None if audio_src is None else audio_src.name,
        "audio_track": getattr(audio_src, "track", None), "model": scorer.notice, "model_card": scorer.card,
        "backend": scorer.name, "labels": scorer.labels,
        "window": window, "hop": hop, "task": scorer.cfg.task, "threshold": scorer.cfg.threshold,
        "realtime": realtime, "text_deadline": text_deadline, "asr": transcriber is not None,
    })
    if record is not None:
        recorder = Recorder(record, video.fps)
    interactive = console.is_terminal

    def on_result(r):
        writer.write(r)
        if recorder is not None:
            recorder.latest = r
        if not interactive:
            console.print(window_line(r), soft_wrap=True, highlight=False, markup=False)

    # ---- run -------------------------------------------------------------------------------
    stops = {"n": 0}

    def request_stop(signum=None, frame=None):
        stops["n"] += 1
        if stops["n"] > 1:  # a second request: leave now (every scored window is already on disk)
            raise SystemExit(130 if signum == signal.SIGINT else 143)
        runner.stop()

    old_handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    what = " + ".join(s.name for s in runner.sources)
    console.print(f"live: {what}  ->  {writer.jsonl_path}  (Ctrl-C stops)", soft_wrap=True, highlight=False)

    noted: set[str] = set()

    def note_stopped(snap, final: bool = False) -> None:  # a track that ends while the run goes on is said once
        for track, t in snap.stopped.items():
            if track not in noted and (final or not interactive):  # the interactive view shows it meanwhile
                noted.add(track)
                note(f"the {track} stopped at {t:.1f} s: the windows after it score without it")

    def tick() -> None:
        note_stopped(runner.snapshot())
        if recorder is not None:
            recorder.status = status_line(runner.snapshot())[:90]
        if show:
            _show(latest, runner, request_stop)

    runner.start()
    error = None
    try:
        if interactive:
            from rich.live import Live

            with Live(render(runner.snapshot(), what), console=console, refresh_per_second=8) as view:
                while not runner.wait(0.1):
                    view.update(render(runner.snapshot(), what))
                    tick()
                view.update(render(runner.snapshot(), what))
        else:
            while not runner.wait(0.1):
                tick()
        runner.join()
        error = runner.error
    except BaseException as e:
        error = error or f"interrupted ({type(e).__name__})"
        raise
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
        stopped = runner.snapshot().stopped
        writer.close(error=error, info={"stopped": stopped} if stopped else None)
        if recorder is not None:
            recorder.close()
        if show:
            import cv2

            cv2.destroyAllWindows()

    # ---- report ----------------------------------------------------------------------------
    snap = runner.snapshot()
    note_stopped(snap, final=True)
    console.print(f"timeline: {writer.jsonl_path}  {writer.csv_path}  ({len(writer.results)} windows)", soft_wrap=True)
    if recorder is not None:
        console.print(f"video: {recorder.path} ({recorder.written} frames, {recorder.dropped} dropped)", soft_wrap=True)
    if plot and writer.results:
        writer.plot(title=f"live: {what} — {scorer.name}")
        console.print(f"plot: {writer.png_path}", soft_wrap=True)
    c = snap.counters
    console.print(
        f"latency p50 {_s(snap.latency_p50)}, p95 {_s(snap.latency_p95)}; windows {snap.windows_scored} scored, "
        f"{snap.windows_dropped} dropped; frames {snap.frames_captured} captured, {snap.frames_dropped} dropped; "
        f"encoded {c.frames_encoded} frames ({c.frame_cache_hits} cache hits), {c.segments_encoded} audio segments, "
        f"{c.texts_encoded} transcripts ({c.text_cache_hits} cache hits)"
        + (f"; ASR skipped {snap.asr_skipped_seconds:.1f} s" if snap.asr_skipped_seconds else "")
        + (f"; transcript deadline hit {snap.text_forced}x" if snap.text_forced else ""),
        soft_wrap=True, highlight=False,
    )
    if writer.results and not interactive:
        for lab, n, mean in summary(writer.results)[:3]:
            console.print(f"  {lab}: top in {n} windows, mean {mean:.3f}", highlight=False)
    if error:
        fail(f"{error}; the timeline so far is kept in {writer.jsonl_path}")
    if recorder is not None and recorder.error:
        fail(f"{recorder.error}; the timeline is complete: {writer.jsonl_path}")


def _s(x):
    return "-" if x is None else f"{x:.2f} s"


def _show(latest, runner, request_stop) -> None:
    import cv2

    from .live_view import draw_overlay, status_line

    rgb = latest["rgb"]
    if rgb is None:
        return
    snap = runner.snapshot()
    cv2.imshow("merstream live", draw_overlay(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), snap.last, status_line(snap)[:90]))
    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
        request_stop()
