"""Face crops for models whose image tower was trained on face images (model config ``face_crop``).

Each frame is searched on its own (no tracking, so a frame's crop never depends on which frames came
before it): OpenCV's frontal-face Haar cascade runs on a grey copy whose shorter side is
``DETECT_SIDE`` pixels; the largest face's box, squared (and widened by ``MARGIN``), is cut from the
full-resolution grey frame (FER2013-style: grey, face filling the image) and returned as 3-channel
uint8. A frame with no face found gives its centre square instead.

The framing matches the FER2013 faces the default model learns from: the same cascade run again on
FER2013 validation images finds a box of about 0.96 of the image side (median; 0.90-1.04 between the
quartiles), and on this module's crops of talk_6emotions.mp4 about 0.93, so the box is cut as it is (a
10 % margin on each side, used before 2026-11-24, showed faces at about 0.76 of the side).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import MerstreamError

DETECT_SIDE = 160  # detection runs at this shorter side (about 7 ms a frame on one core)
MIN_FACE = 0.15  # smallest face searched for, as a share of the shorter side
MARGIN = 0.0  # widen the detected box by this share on each side (0: FER2013 framing, see above)


@dataclass
class FaceBox:
    x: int
    y: int
    size: int


def _cascade() -> "cv2.CascadeClassifier":
    if not hasattr(cv2, "CascadeClassifier"):
        raise MerstreamError(
            f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 dropped them): pip install 'opencv-python<5'"
        )
    c = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if c.empty():
        raise MerstreamError("OpenCV's haarcascade_frontalface_default.xml is missing: reinstall opencv-python")
    return c


class FaceCropper:
    """``crop(rgb) -> [s, s, 3] uint8`` grey face crop; counters say how often a face was found."""

    def __init__(self) -> None:
        self.cascade = _cascade()
        self.found = 0
        self.missed = 0

    def find(self, grey: np.ndarray) -> FaceBox | None:
        """The largest face of a grey frame, in its pixels, squared and widened, clipped to the frame."""
        h, w = grey.shape
        scale = min(1.0, DETECT_SIDE / min(h, w))
        small = grey if scale == 1.0 else cv2.resize(grey, (round(w * scale), round(h * scale)),
                                                     interpolation=cv2.INTER_AREA)
        side = int(min(small.shape) * MIN_FACE)
        faces = self.cascade.detectMultiScale(small, scaleFactor=1.15, minNeighbors=4, minSize=(side, side))
        if len(faces) == 0:
            return None
        x, y, fw, fh = (float(v) / scale for v in max(faces, key=lambda f: f[2] * f[3]))
        size = min(max(fw, fh) * (1 + 2 * MARGIN), h, w)
        cx, cy = x + fw / 2, y + fh / 2
        x0 = int(round(min(max(cx - size / 2, 0), w - size)))
        y0 = int(round(min(max(cy - size / 2, 0), h - size)))
        return FaceBox(x0, y0, int(size))

    def crop(self, rgb: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        box = self.find(grey)
        h, w = grey.shape
        if box is None:
            self.missed += 1
            s = min(h, w)
            box = FaceBox((w - s) // 2, (h - s) // 2, s)
        else:
            self.found += 1
        face = grey[box.y : box.y + box.size, box.x : box.x + box.size]
        return np.repeat(face[:, :, None], 3, axis=2)

    def crop_all(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return [self.crop(f) for f in frames]
