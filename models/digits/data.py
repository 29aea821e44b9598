"""The digits data set of the example model: scikit-learn's bundled 8x8 handwritten digits.

The images ship inside scikit-learn (no download). Pixel values 0..16 are scaled to [0, 1];
the split is fixed (``train_test_split`` with ``test_size=0.2, random_state=0``), so the
held-out images are the same on every machine.
"""

import numpy as np

__all__ = ["TEST_SIZE", "SEED", "split", "train_set", "held_out"]

TEST_SIZE = 0.2
SEED = 0


def split():
    """``(x_train, x_test, y_train, y_test)``; images float32 ``(N, 1, 8, 8)`` in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    return train_test_split(images, labels, test_size=TEST_SIZE, random_state=SEED)


def train_set():
    """Training images and labels (also the calibration data of the quantizer)."""
    x_train, _, y_train, _ = split()
    return x_train, y_train


def held_out():
    """Held-out images float32 ``(N, 1, 8, 8)`` and labels int64 ``(N,)``."""
    _, x_test, _, y_test = split()
    return x_test, y_test
