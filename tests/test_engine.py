"""The engine core on real decoded media: window assembly, 12-frame sampling, caching, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TALK6
from merstream.asr import Word
from merstream.config import StreamConfig
from merstream.engine import Engine
from merstream.engine.windows import Window, window_count, words_in
from merstream.media import iter_frames, read_audio
from merstream.torch_scorer import TorchScorer


def test_twelve_frames_sampled_regularly():
    w = Window(3, 3.0, 5.0)
    times = w.frame_times(12)
    assert len(times) == 12
    assert times[0] == pytest.approx(3.0 + 1 / 12) and times[-1] == pytest.approx(5.0 - 1 / 12)
    assert np.allclose(np.diff(times), 2.0 / 12)
    assert w.segment_starts(2.0) == [3.0]
    assert Window(0, 0.0, 5.0).segment_starts(2.0) == [0.0, 2.0, 4.0]  # T_A = ceil(tau / 2)


@pytest.mark.parametrize("duration,expected", [(12.68, 12), (1.9, 1), (2.0, 1), (3.0, 2), (0.0, 0)])
def test_window_count_covers_the_media(duration, expected):
    assert window_count(duration, 2.0, 1.0) == expected


def test_no_window_starts_after_the_media_when_hop_exceeds_window():
    assert window_count(1.894, 1.0, 2.0) == 1  # a second window would start at 2.0, past the end
    assert window_count(4.5, 0.5, 2.0) == 3  # starts 0, 2, 4
    assert window_count(4.0, 0.5, 2.0) == 2


def test_words_fall_in_windows_by_midpoint():
    words = [Word(0.1, 0.5, "a"), Word(1.8, 2.4, "b"), Word(3.0, 3.2, "c")]
    assert words_in(words, 0.0, 2.0) == "a"
    assert words_in(words, 2.0, 4.0) == "b c"
    assert words_in(words, 2.0, 4.0, left_context=2.0) == "a b c"


@pytest.fixture(scope="module")
def talk6_media():
    frames = list(iter_frames(TALK6))
    return frames, read_audio(TALK6)


def _run(engine, frames, audio, sr=16000):
    out, fed = [], 0
    for t, rgb in frames:
        upto = min(len(audio), int(t * sr))
        engine.insert_audio(audio[fed:upto])
        fed = upto
        engine.insert_frame(t, rgb)
        out += engine.process_iter()
        assert len(engine.frames) <= 140  # raw frames are evicted as windows complete (~3 s at 30 fps)
        assert len(engine.frame_cache) <= 40
    engine.insert_audio(audio[fed:])
    out += engine.process_iter()
    out += engine.finish(12.68)
    return out


def _audio_first(scorer, stream, frames, audio):
    """The audio all at once, then the frames one by one (scoring as they come), then the video's end."""
    e = Engine(scorer, stream, has_text=False)
    e.insert_audio(audio)
    out = []
    for t, rgb in frames:
        e.insert_frame(t, rgb)
        out += e.process_iter()
    e.end_video()
    return e, out + e.process_iter() + e.finish(12.68)


@pytest.fixture(scope="module")
def audio_first(tiny_model, talk6_media):
    """_audio_first over every decoded frame at window 2 / hop 1: (engine, results), computed once for
    the two tests below that compare other runs with it."""
    frames, audio = talk6_media
    return _audio_first(TorchScorer(tiny_model), StreamConfig(), frames, audio)


@pytest.fixture(scope="module")
def streamed(tiny_model, talk6_media):
    """The clip streamed through a caching engine (audio fed with each frame, _run's bounds checked
    on the way): (engine, results). Computed once; the tests below check different properties of it."""
    frames, audio = talk6_media
    engine = Engine(TorchScorer(tiny_model), StreamConfig(), has_text=False)
    return engine, _run(engine, frames, audio)


def test_engine_encodes_each_sampled_frame_once(streamed, talk6_media):
    frames, _ = talk6_media
    engine, results = streamed
    assert [r.index for r in results] == list(range(12))
    c = engine.counters
    frame_times = np.array([t for t, _ in frames])
    distinct, slots = set(), 0
    for r in results:  # the frames each window samples (the last one over its clipped span)
        keys = set()
        for t in Window(r.index, r.start, r.end).frame_times(12):
            d = np.abs(frame_times - t)
            keys.add(float(frame_times[np.flatnonzero(d <= d.min() + 1e-9)[0]]))  # the earlier frame on a tie
        distinct |= keys
        slots += len(keys)
    assert c.frames_encoded == len(distinct)
    assert c.frames_encoded + c.frame_cache_hits == slots
    assert c.frame_cache_hits >= 66 - 6 and c.segments_encoded == 12 and c.segment_cache_hits == 0


def test_engine_results_do_not_depend_on_how_media_is_chunked(streamed, audio_first):
    """Windows come out identical whether audio arrives with each frame or all at once."""
    _, a = streamed  # audio with each frame
    _, b = audio_first  # all the audio first
    assert len(a) == 12 and [r.start for r in a] == [r.start for r in b]
    for x, y in zip(a, b):
        assert x.labels == y.labels
        assert np.allclose(list(x.scores.values()), list(y.scores.values()), atol=1e-5)


def test_stale_windows_are_dropped_not_queued(tiny_model, talk6_media):
    frames, audio = talk6_media
    e = Engine(TorchScorer(tiny_model), StreamConfig(), has_text=False, max_pending=1)
    e.insert_audio(audio)
    for t, rgb in frames:  # nothing scored while media arrives: compute "fell behind"
        e.insert_frame(t, rgb)
    out = e.process_iter()
    assert len(out) == 1 and out[0].index == 10  # only the newest ready window is scored
    assert e.counters.windows_dropped == 10


def test_naive_baseline_gives_the_same_windows_with_more_encodes(tiny_model, talk6_media, streamed):
    frames, audio = talk6_media
    cached, a = streamed  # the caching engine, fed the same way as the naive one
    naive = Engine(TorchScorer(tiny_model), StreamConfig(), has_text=False, reuse=False)
    b = _run(naive, frames, audio)
    assert [r.index for r in a] == [r.index for r in b] == list(range(12))
    for x, y in zip(a, b):
        assert np.allclose(list(x.scores.values()), list(y.scores.values()), atol=1e-5)
    assert naive.counters.frame_cache_hits == 0
    assert naive.counters.frames_encoded == sum(r.frames for r in b) > 1.7 * cached.counters.frames_encoded


def test_short_audio_does_not_hold_video_windows_back(tiny_model, talk6_media):
    frames, audio = talk6_media
    e = Engine(TorchScorer(tiny_model), StreamConfig(), has_text=False)
    e.insert_audio(audio[: 3 * 16000])
    e.end_audio()
    scored = []
    for t, rgb in frames:
        e.insert_frame(t, rgb)
        scored += e.process_iter()
        assert len(e.frames) <= 140  # windows keep being scored, so frames keep being evicted
    assert len(scored) == 11  # every full window while the video plays
    assert [r.modalities for r in scored[:3]] == ["VA", "VA", "VA"] and scored[3].modalities == "V"
    assert scored[2].segments == 1 and scored[3].segments == 0


def test_hop_longer_than_window_reads_the_right_audio(tiny_model, talk6_media):
    _, audio = talk6_media
    scorer = TorchScorer(tiny_model)
    e = Engine(scorer, StreamConfig(window=1.0, hop=3.0), has_video=False, has_text=False)
    seen = []
    real = e._segment_audio
    e._segment_audio = lambda key: seen.append((key, real(key))) or seen[-1][1]
    out = []
    for i in range(0, len(audio), 4000):  # 0.25 s chunks
        e.insert_audio(audio[i : i + 4000])
        out += e.process_iter()
    e.end_audio()
    out += e.finish(len(audio) / 16000)
    assert [r.start for r in out] == [0.0, 3.0, 6.0, 9.0, 12.0]
    for (start, end), samples in seen:
        a = int(round(start * 16000))
        n = int(round((end - start) * 16000))
        assert end - start <= 1.0  # segments are cut at the window end
        expected = audio[a : a + n]
        assert np.array_equal(samples[: len(expected)], expected)
        assert not samples[len(expected) :].any()  # past the window end / the audio end: zeros


@pytest.mark.parametrize("window,hop", [(2.0, 1.0), (3.0, 0.7)])
def test_file_runner_converts_only_the_frames_the_engine_picks(tiny_model, talk6_media, window, hop, request):
    from merstream.run_file import sampled_frames

    frames, audio = talk6_media
    stream = StreamConfig(window=window, hop=hop)
    kept = list(sampled_frames(iter(frames), stream, 12, 12.68))
    assert len(kept) < (0.4 if hop == window / 2 else 0.7) * len(frames)  # 6 vs ~17 sample times a second
    runs = []
    for fs in (frames, kept):
        if fs is frames and stream == StreamConfig():  # every frame at window 2 / hop 1: the shared run
            e, out = request.getfixturevalue("audio_first")
        else:
            e, out = _audio_first(TorchScorer(tiny_model), stream, fs, audio)
        runs.append((out, e.counters.frames_encoded))
    (a, na), (b, nb) = runs
    assert na == nb and len(a) == len(b)
    for x, y in zip(a, b):
        assert x.frames == y.frames and np.allclose(list(x.scores.values()), list(y.scores.values()), atol=1e-6)


def test_windows_forced_before_their_words_are_committed_use_the_tentative_words(tiny_model, talk6_media):
    """Live, past --text-deadline: committed words plus the recogniser's latest hypothesis after them;
    a hypothesis overlapping committed words is not used twice."""
    frames, audio = talk6_media
    e = Engine(TorchScorer(tiny_model), StreamConfig(), has_video=False)
    e.insert_audio(audio[: 5 * 16000])
    e.insert_words([Word(0.2, 0.6, "don't")], until=0.7)
    e.set_tentative([Word(0.4, 0.6, "dont"), Word(0.8, 1.1, "forget"), Word(1.2, 1.6, "a"), Word(2.5, 2.9, "jacket")])
    assert e.process_iter() == []  # the transcript is committed only to 0.7 s: windows wait
    e.insert_words([], until=3.0)  # the deadline passed: score with what there is
    out = e.process_iter()
    assert [r.index for r in out] == [0, 1]
    assert out[0].text == "don't forget a" and out[1].text == "a jacket"  # by word midpoint
    e.insert_words([Word(0.8, 1.1, "forget"), Word(1.2, 1.6, "a")], until=1.7)
    e.set_tentative([Word(1.3, 1.5, "uh"), Word(2.5, 2.9, "jacket")])
    assert [w.text for w in e._words()] == ["don't", "forget", "a", "jacket"]


def test_encode_ahead_prepares_windows_waiting_for_words_without_changing_them(tiny_model, talk6_media):
    frames, audio = talk6_media
    words = [Word(0.3, 0.6, "don't"), Word(0.7, 1.0, "forget"), Word(1.1, 1.2, "a"), Word(1.3, 1.8, "jacket")]

    def run(ahead: bool):
        e = Engine(TorchScorer(tiny_model), StreamConfig(), has_text=True)
        e.insert_audio(audio[: 4 * 16000])
        for t, rgb in frames:
            if t < 3.5:
                e.insert_frame(t, rgb)
        assert e.process_iter() == []  # media is there, the transcript is not
        prepared = e.encode_ahead() if ahead else 0
        before = e.counters.frames_encoded
        e.insert_words(words, until=3.2)
        return e, prepared, before, e.process_iter()

    e1, prepared, before, a = run(True)
    e2, _, _, b = run(False)
    assert prepared == 2 and before > 0
    assert e1.counters.frames_encoded == before  # scoring found every frame already encoded
    assert e1.encode_ahead() == 0
    assert e1.counters == e2.counters  # encoded once, and cache hits counted as without encode_ahead
    assert [r.index for r in a] == [r.index for r in b] == [0, 1]
    for x, y in zip(a, b):
        assert x.text == y.text == ("don't forget a jacket" if x.index == 0 else "a jacket")
        assert np.allclose(list(x.scores.values()), list(y.scores.values()), atol=1e-6)


class LateTranscriber:
    """The real tiny.en transcriber whose words are handed over only once the frames up to
    ``release_at`` seconds have been fed: forces the file runner to encode ahead while it waits."""

    def __init__(self, release_at: float):
        import threading

        from merstream.asr import Transcriber

        self.inner, self.release_at, self.released = Transcriber(), release_at, threading.Event()

    def progress(self, t: float) -> None:
        if t >= self.release_at:
            self.released.set()

    def words(self, audio):
        words = list(self.inner.words(audio))
        assert self.released.wait(120)
        return iter(words)


def test_file_transcribed_in_the_background_gives_the_sequential_result(tiny_model):
    """`merstream file` overlaps faster-whisper with frame decoding and encoding (encode_ahead),
    and scores 8 windows per batch; the timeline and counters equal the sequential run's."""
    from merstream.run_file import make_engine, prepare, score_job

    scorer = TorchScorer(tiny_model)
    late = LateTranscriber(release_at=11.5)
    runs = {}
    for overlap in (False, True):
        if overlap:
            late.released.clear()  # held back until the frames reach 11.5 s
        else:
            late.released.set()  # sequential: transcribed before any frame is decoded
        job = prepare(str(TALK6), scorer, late, on_note=lambda m: None, overlap=overlap)
        assert (job.pending is not None) == overlap
        engine = make_engine(job, scorer, StreamConfig())
        runs[overlap] = (list(score_job(str(TALK6), job, engine, on_progress=late.progress)), engine)
    (seq, e_seq), (ovl, e_ovl) = runs[False], runs[True]
    assert e_ovl.encoded_ahead >= 7  # windows 0-7 (complete at 9 s) were encoded while the words were pending
    assert len(ovl) == len(seq) == 12 and "jacket" in ovl[0].text
    for a, b in zip(seq, ovl):
        assert (a.start, a.end, a.text, a.frames, a.segments, a.modalities) == (b.start, b.end, b.text, b.frames, b.segments, b.modalities)
        assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-5
    assert e_ovl.counters == e_seq.counters



def test_audio_only_file_encodes_its_audio_while_the_words_are_made(tiny_model, tmp_path):
    """An audio-only file has no frames to decode while faster-whisper runs: its windows' audio is
    encoded meanwhile (progress follows it), and the timeline and counters equal the sequential run's."""
    import subprocess

    from merstream.run_file import make_engine, prepare, score_job

    m4a = tmp_path / "talk6.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(TALK6), "-vn", "-c:a", "copy", str(m4a)], check=True)
    scorer = TorchScorer(tiny_model)
    late = LateTranscriber(release_at=11.5)
    runs, seen = {}, []
    for overlap in (False, True):
        if overlap:
            late.released.clear()  # held back until the audio up to 11.5 s has been encoded
        else:
            late.released.set()
        job = prepare(str(m4a), scorer, late, on_note=lambda m: None, overlap=overlap)
        assert not job.info.has_video and (job.pending is not None) == overlap
        engine = make_engine(job, scorer, StreamConfig())

        def progress(t):
            seen.append((overlap, t))
            late.progress(t)

        runs[overlap] = (list(score_job(str(m4a), job, engine, on_progress=progress)), engine)
    (seq, e_seq), (ovl, e_ovl) = runs[False], runs[True]
    assert e_ovl.encoded_ahead == 10 and e_seq.encoded_ahead == -1  # all but the last, partial window; none
    assert [t for o, t in seen if o][:2] == [9.0, 12.0]  # 8 windows, then the other 3 full ones
    assert len(ovl) == len(seq) == 12 and "jacket" in ovl[0].text and ovl[0].modalities == "LA"
    for a, b in zip(seq, ovl):
        assert (a.start, a.end, a.text, a.segments, a.modalities) == (b.start, b.end, b.text, b.segments, b.modalities)
        assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-5
    assert e_ovl.counters == e_seq.counters

def test_speaker_normalisation_is_applied_once_per_segment_batched_streamed_or_naive(tiny_cfg, talk6_media):
    """A model with ``speaker_mean``: the engine normalises each segment by the voice so far. Fed all
    at once (windows scored 8 per batch), streamed (a window at a time) or naive (every window
    re-encoded), the scores agree, each segment joined the estimate exactly once, and they differ from
    the same weights without normalisation."""
    import copy

    import torch

    from merstream.model import MerClip
    from merstream.model.spectrogram import voiced_columns

    frames, audio = talk6_media
    cfg = copy.deepcopy(tiny_cfg)
    cfg.audio.speaker_mean = np.linspace(0.6, -0.2, cfg.audio.image_size).round(4).tolist()
    torch.manual_seed(0)
    model = MerClip(cfg).eval()

    def engine(m=model, reuse=True):
        return Engine(TorchScorer(m), StreamConfig(), has_video=False, has_text=False, reuse=reuse)

    batched = engine()
    batched.insert_audio(audio)
    batched.end_audio()
    a = batched.process_iter() + batched.finish(12.68)
    streamed, naive = engine(), engine(reuse=False)
    b, c = _run(streamed, frames, audio), _run(naive, frames, audio)
    assert len(a) == len(b) == len(c) == 12
    for x, y, z in zip(a, b, c):
        assert np.allclose(list(x.scores.values()), list(y.scores.values()), atol=1e-5)
        assert np.allclose(list(x.scores.values()), list(z.scores.values()), atol=1e-5)
    mel = batched.audio_front
    starts = [int(round(r.start * 16000)) for r in a]  # each window's one 2 s segment (to the audio's end)
    voiced = sum(len(voiced_columns(mel(audio[s: s + 32000]))) for s in starts)
    for e in (batched, streamed, naive):
        assert e.speaker.columns == pytest.approx(cfg.audio.speaker_prior_columns + voiced)
    plain = copy.deepcopy(model)
    plain.cfg = copy.deepcopy(cfg)
    plain.cfg.audio.speaker_mean = None
    d = _run(engine(plain), frames, audio)
    assert max(abs(x.scores[k] - z.scores[k]) for x, z in zip(b, d) for k in x.scores) > 1e-3


def test_silence_does_not_move_the_speaker_estimate():
    from merstream.config import AudioConfig
    from merstream.media import read_audio
    from merstream.model.spectrogram import LogMelImage, SpeakerNorm

    cfg = AudioConfig(n_mels=64, image_size=64, level_db=-20.0, speaker_mean=[0.3] * 64)
    mel = LogMelImage(cfg)
    norm = SpeakerNorm(cfg)
    noise = 1e-3 * np.random.default_rng(0).standard_normal((30, 32000)).astype(np.float32)
    norm.update(mel(np.zeros((30, 32000), np.float32)))
    norm.update(mel(noise))  # a minute of muted microphone and steady noise, boosted by level_db
    assert norm.columns == cfg.speaker_prior_columns and np.allclose(norm.offset, 0)
    norm.update(mel(read_audio(TALK6)[16000:48000]))  # then speech
    assert norm.columns > cfg.speaker_prior_columns + 20 and np.abs(norm.offset).mean() > 0.01


def test_a_plot_that_cannot_be_written_leaves_no_temporary_file(tmp_path):
    from merstream.engine.windows import WindowResult
    from merstream.sinks import plot_timeline

    rows = [WindowResult(index=0, start=0.0, end=2.0, scores={"happy": 0.7, "sad": 0.2}, labels=["happy"], top="happy",
                         text="", modalities="VA", frames=12, segments=1)]
    plot_timeline(rows, ["happy", "sad"], tmp_path / "ok.png")
    assert (tmp_path / "ok.png").stat().st_size > 1000
    (tmp_path / "talk.png").mkdir()  # a directory where the PNG goes
    with pytest.raises(IsADirectoryError):
        plot_timeline(rows, ["happy", "sad"], tmp_path / "talk.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png", "talk.png"]


def test_the_plot_draws_each_label_and_leaves_gaps_where_a_window_has_no_score(tmp_path):
    import cv2

    from merstream.plot import PALETTE, draw_timeline
    from merstream.sinks import plot_timeline

    def drawn_columns(scores):
        img = draw_timeline([1.0, 2.0, 3.0], {"happy": scores}, "title")
        colour = np.all(np.abs(img.astype(int) - PALETTE[0]) < 40, axis=-1)
        return colour[40:-52, 64:-180].any(axis=0)  # inside the axes: which columns show the line

    whole, gap = drawn_columns([0.5, 0.5, 0.5]), drawn_columns([0.5, None, 0.5])
    middle = slice(len(whole) // 2 - 60, len(whole) // 2 - 20)  # between the first and the middle window
    assert whole[middle].all() and not gap[middle].any()
    # labels OpenCV's fonts cannot write are plotted by matplotlib: still a PNG
    from merstream.engine.windows import WindowResult

    rows = [WindowResult(index=i, start=float(i), end=i + 2.0, scores={"喜び": 0.7, "😀": 0.2}, labels=["喜び"], top="喜び",
                         text="", modalities="VA", frames=12, segments=1) for i in range(3)]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Glyph missing" warnings: such labels are named by number
        plot_timeline(rows, ["喜び", "😀"], tmp_path / "cjk.png", title="喜び")
    assert cv2.imread(str(tmp_path / "cjk.png")) is not None


def test_csv_predicted_column_is_a_json_list(tmp_path):
    import csv
    import json

    from merstream.engine.windows import WindowResult
    from merstream.sinks import TimelineWriter

    w = TimelineWriter(tmp_path, "t", ["calm; quiet", "tense", "sad"])
    w.write(WindowResult(index=0, start=0.0, end=2.0, scores={"calm; quiet": 0.8, "tense": 0.7, "sad": 0.1},
                         labels=["calm; quiet", "tense"], top="calm; quiet", text="", modalities="VA", frames=12, segments=1))
    w.close()
    row = next(csv.DictReader(open(tmp_path / "t.csv", newline="")))
    assert json.loads(row["predicted"]) == ["calm; quiet", "tense"]
