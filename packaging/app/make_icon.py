"""Draw packaging/app/diffrecon.png (256x256): a head phantom, noisy on the left, clean on the right.

Run once with any Python that has numpy and Pillow: ``python packaging/app/make_icon.py``.
"""

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 256


def ellipse(yy, xx, cy, cx, ry, rx, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    y, x = yy - cy, xx - cx
    return ((x * c + y * s) / rx) ** 2 + ((-x * s + y * c) / ry) ** 2 <= 1.0


def main() -> None:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    head = np.zeros((SIZE, SIZE))
    head[ellipse(yy, xx, 128, 128, 110, 88)] = 1.0  # skull
    head[ellipse(yy, xx, 128, 128, 100, 78)] = 0.35  # brain
    head[ellipse(yy, xx, 112, 104, 40, 16, 0.3)] = 0.1  # ventricles
    head[ellipse(yy, xx, 112, 152, 40, 16, -0.3)] = 0.1
    head[ellipse(yy, xx, 178, 128, 12, 20)] = 0.7  # a lesion
    noisy = np.clip(head + np.random.default_rng(0).normal(0, 0.25, head.shape), 0, 1)
    # Left of the diagonal: the measurement; right: the reconstruction.
    image = np.where(xx + 0.3 * (yy - 128) < 128, noisy, head)
    grey = (image * 235).astype(np.uint8)
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    inside = ellipse(yy, xx, 128, 128, 122, 122)  # a round badge on a transparent background
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = grey // 2 + 10, grey // 2 + 40, grey // 2 + 70
    rgba[..., :3] = np.where(head[..., None] > 0, np.stack([grey] * 3, -1), rgba[..., :3])
    rgba[..., 3] = np.where(inside, 255, 0)
    Image.fromarray(rgba, "RGBA").save(Path(__file__).with_name("diffrecon.png"))


if __name__ == "__main__":
    main()
