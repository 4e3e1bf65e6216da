"""Frame preprocessing for the CLIP image tower (done in numpy/OpenCV, shared by all backends)."""

from __future__ import annotations

import cv2
import numpy as np

from .faces import DETECT_SIDE, FaceCropper

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def shrink(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` (kept as uint8; cheap enough for every frame)."""
    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    if abs(scale - 1.0) < 1e-6:
        return np.ascontiguousarray(rgb)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(rgb, (max(size, round(w * scale)), max(size, round(h * scale))), interpolation=interp)


def to_model_input(frames: list[np.ndarray], size: int, faces: FaceCropper | None = None) -> np.ndarray:
    """Shrunk RGB uint8 frames -> [N, 3, size, size] float32, centre-cropped, CLIP-normalised; with
    ``faces``, each frame is first replaced by its grey face crop (models with ``face_crop``)."""
    if faces is not None:
        frames = faces.crop_all(frames)
    out = np.empty((len(frames), 3, size, size), dtype=np.float32)
    for i, f in enumerate(frames):
        if min(f.shape[:2]) != size:
            f = shrink(f, size)
        h, w = f.shape[:2]
        y, x = (h - size) // 2, (w - size) // 2
        crop = f[y : y + size, x : x + size].astype(np.float32) / 255.0
        out[i] = ((crop - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)
    return out


def stored_frame_side(image_size: int, face_crop: bool) -> int:
    """Shorter side at which frames are kept until encoded: big enough to find faces in."""
    return max(image_size, DETECT_SIDE) if face_crop else image_size


class FramePrep:
    """One model's frame pipeline, the same in training, export and at run time: frames are kept
    shrunk to :attr:`side` (large enough to find faces in for ``face_crop`` models) and turned into
    tower input by :meth:`to_input` (face crops first when ``face_crop``)."""

    def __init__(self, image_size: int, face_crop: bool):
        self.image_size = image_size
        self.side = stored_frame_side(image_size, face_crop)
        self.faces = FaceCropper() if face_crop else None

    def keep(self, rgb: np.ndarray) -> np.ndarray:
        return shrink(rgb, self.side)

    def to_input(self, frames: list[np.ndarray]) -> np.ndarray:
        return to_model_input(list(frames), self.image_size, self.faces)
