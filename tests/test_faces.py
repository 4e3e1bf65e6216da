"""Face crops (model config ``face_crop``) on real video: the face where there is one, the centre
square where there is none, and the engine hands the image tower grey face crops."""

from __future__ import annotations

import cv2
import numpy as np

from conftest import DATA, TALK6
from merstream.config import ModelConfig, StreamConfig
from merstream.engine import Engine
from merstream.faces import DETECT_SIDE, FaceCropper
from merstream.media import iter_frames, read_audio
from merstream.model import MerClip
from merstream.preprocess import CLIP_MEAN, CLIP_STD
from merstream.torch_scorer import TorchScorer


def _pixels(x: np.ndarray) -> np.ndarray:
    """CLIP-normalised model input back to [0, 1] pixels."""
    return x * CLIP_STD.reshape(1, 3, 1, 1) + CLIP_MEAN.reshape(1, 3, 1, 1)


def _some_frames(path, every=20, n=10):
    return [rgb for i, (_, rgb) in enumerate(iter_frames(path)) if i % every == 0][:n]


def test_finds_the_speaker_face_in_real_video():
    c = FaceCropper()
    frames = _some_frames(TALK6)  # 480x360, the face is about 125 px wide, left of centre
    boxes = [c.find(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)) for f in frames]
    assert all(b is not None for b in boxes)
    for b in boxes:
        assert 120 <= b.size <= 200
        cx, cy = b.x + b.size / 2, b.y + b.size / 2
        assert 160 < cx < 320 and 80 < cy < 240
    other = [c.find(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)) for f in _some_frames(DATA / "video" / "single_face.mp4")]
    assert sum(b is not None for b in other) >= len(other) - 1


def test_crop_is_a_grey_square_of_the_face():
    c = FaceCropper()
    frame = _some_frames(TALK6, n=1)[0]
    crop = c.crop(frame)
    assert crop.dtype == np.uint8 and crop.ndim == 3 and crop.shape[2] == 3
    assert crop.shape[0] == crop.shape[1] < min(frame.shape[:2])
    assert (crop[..., 0] == crop[..., 1]).all() and (crop[..., 1] == crop[..., 2]).all()
    assert (c.found, c.missed) == (1, 0)



def _face_share(c: FaceCropper, grey: np.ndarray) -> float | None:
    """Side of the face box the cascade finds in an image that should be a face crop, as a share of
    the image side (the image is scaled to 160 px and given a border, so a face that fills it is found)."""
    g = cv2.resize(grey, (160, 160), interpolation=cv2.INTER_AREA if grey.shape[0] > 160 else cv2.INTER_CUBIC)
    g = cv2.copyMakeBorder(g, 40, 40, 40, 40, cv2.BORDER_REPLICATE)
    found = c.cascade.detectMultiScale(g, scaleFactor=1.05, minNeighbors=4, minSize=(40, 40))
    return None if len(found) == 0 else max(b[2] for b in found) / 160


def test_crops_frame_the_face_as_fer2013_does():
    """The default model's image tower learnt from FER2013 faces, so the run-time crop must show a
    face at the same size: measured the same way on FER2013 validation images and on the crops."""
    c = FaceCropper()
    fer = sorted((DATA / "fer2013" / "validation").glob("*/*"))[::40]
    fer_shares = [s for s in (_face_share(c, cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)) for p in fer) if s]
    crop_shares = [_face_share(c, c.crop(f)[..., 0]) for f in _some_frames(TALK6)]
    assert len(fer_shares) > 0.7 * len(fer) and all(crop_shares)
    assert abs(np.median(crop_shares) - np.median(fer_shares)) < 0.08, (np.median(crop_shares), np.median(fer_shares))

def test_a_frame_without_a_face_gives_its_centre_square():
    c = FaceCropper()
    y, x = np.mgrid[0:240, 0:320]
    frame = np.stack([(x * 0.8) % 256, (y * 1.0) % 256, ((x + y) * 0.5) % 256], -1).astype(np.uint8)
    crop = c.crop(frame)
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    assert (c.found, c.missed) == (0, 1)
    assert crop.shape == (240, 240, 3)
    assert np.array_equal(crop[..., 0], grey[:, 40:280])


def test_engine_gives_the_image_tower_grey_face_crops(tiny_model):
    cfg = ModelConfig(clip="merstream-tiny", face_crop=True)
    model = MerClip(cfg).eval()
    model.load_state_dict(tiny_model.state_dict())  # same weights; only what the tower sees differs
    frames = [(t, rgb) for t, rgb in iter_frames(TALK6) if t < 4.0]
    audio = read_audio(TALK6)[: 4 * 16000]

    def run(scorer):
        seen = []
        encode = scorer.encode_frames

        def spy(x):  # records the real inputs, then runs the real encoder
            seen.append(x.copy())
            return encode(x)

        scorer.encode_frames = spy
        e = Engine(scorer, StreamConfig(), has_text=False)
        e.insert_audio(audio)
        out = []
        for t, rgb in frames:
            e.insert_frame(t, rgb)
            out += e.process_iter()
        return e, out + e.finish(4.0), np.concatenate(seen)

    e_face, faced, x_face = run(TorchScorer(model))
    e_full, full, x_full = run(TorchScorer(tiny_model))
    assert min(e_face.frames[0].shape[:2]) == max(DETECT_SIDE, model.image_size)  # large enough to find faces in
    assert e_face.prep.faces.found == e_face.counters.frames_encoded > 0 and e_face.prep.faces.missed == 0
    assert x_face.shape == x_full.shape
    pixels = _pixels(x_face)
    assert np.abs(pixels[:, 0] - pixels[:, 1]).max() < 1e-5 and np.abs(pixels[:, 1] - pixels[:, 2]).max() < 1e-5
    full_px = _pixels(x_full)
    assert np.abs(full_px[:, 0] - full_px[:, 2]).max() > 0.1  # the plain model sees colour frames
    assert [r.index for r in faced] == [r.index for r in full]
    assert any(abs(a.scores[k] - b.scores[k]) > 1e-4 for a, b in zip(faced, full) for k in a.scores)


def test_export_reference_frames_are_face_crops_for_face_crop_models():
    from export import reference_from_media
    from merstream.config import AudioConfig

    ref = reference_from_media(TALK6, 64, AudioConfig(n_mels=64, image_size=64), windows=2, face_crop=True)
    px = _pixels(ref.frames)
    assert ref.frames.shape == (6, 3, 64, 64)
    assert np.abs(px[:, 0] - px[:, 2]).max() < 1e-5  # grey face crops, as the runtime feeds them
