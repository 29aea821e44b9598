"""Train the example digits CNN and write its float and int8 QDQ ONNX models.

Optional: the committed ``digits_float.onnx`` / ``digits_qdq.onnx`` are what tests and demos
use; this script (which needs PyTorch, CPU build) only regenerates them::

    python models/digits/train.py            # from the repository root

Network (8x8 grey input): conv 3x3 1->16 + BN + ReLU, conv 3x3 stride 2 16->32 + BN + ReLU
(4x4), conv 3x3 32->32 + BN + ReLU, max pool 2x2 (2x2), flatten, fully connected 128->10.
Training is seeded and single-threaded, so a rerun gives the same weights on one machine.
"""

import argparse
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import data  # noqa: E402  (this folder's data split)

SEED = 0
EPOCHS = 40
BATCH = 64
CALIBRATION = 256


def build():
    import torch.nn as nn

    def unit(cin, cout, stride):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*unit(1, 16, 1), *unit(16, 32, 2), *unit(32, 32, 1),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 2 * 2, 10))


def train(model, x, y):
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    gen = torch.Generator().manual_seed(SEED)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), BATCH):
            idx = order[start:start + BATCH]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()


def accuracy(path, x, y):
    """Top-1 accuracy of an ONNX model under the onnxruntime reference, one image at a time."""
    from vdla.sim.onnx_reference import reference_session, run_batch

    return float((run_batch(reference_session(path), x).argmax(1) == y).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    args = parser.parse_args(argv)

    import torch

    from vdla.compiler.quantize import quantize_model

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x_train, y_train = data.train_set()
    x_test, y_test = data.held_out()
    model = build()
    train(model, x_train, y_train)

    float_path = args.out / "digits_float.onnx"
    qdq_path = args.out / "digits_qdq.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, 8, 8), str(float_path), input_names=["input"],
                      output_names=["output"], opset_version=13, dynamo=False)
    # Calibrate on a fixed, seeded subset of the training images.
    pick = np.random.default_rng(SEED).choice(len(x_train), CALIBRATION, replace=False)
    quantize_model(float_path, x_train[np.sort(pick)], qdq_path)
    print(f"train images {len(x_train)}, held-out images {len(x_test)}")
    print(f"float accuracy (held-out, onnxruntime): {accuracy(float_path, x_test, y_test):.4f}")
    print(f"QDQ accuracy   (held-out, onnxruntime): {accuracy(qdq_path, x_test, y_test):.4f}")


if __name__ == "__main__":
    main()
