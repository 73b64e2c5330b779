"""Peak memory of scoring one large image: decoded at its full size (as before `decoded_min_side`) against
shrunk by a whole factor first (image.image_size 224: the shorter side kept at least 896).

    python -m bench.image_decode_memory [--size 224] [--cases grey36M,rgb36M,grey16bit40M] [--code DIR]

Each case runs in its own process: the image decoder (deuterium.data_types.image.decode), then the image
front end exported to ONNX (the graph's float conversion, antialiased resize and normalization) in
onnxruntime on the CPU, as the service's two processes do for one upload. It prints each process's
peak resident memory (VmHWM) and the ratio shrunk / full, with a process that only imports the same
modules as the baseline for the fixed cost. `--code DIR` runs the processes with another checkout's
`deuterium` (`git worktree add /tmp/before REV`), for a before-and-after of the decoder itself. The images are made here (PNG, the helper's shapes: a 6000 x
6000 grey one, a 3000 x 12000 colour one, a 6300 x 6300 16-bit grey one). Tests never run this.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CASES = {  # name: (height, width, channels, dtype)
    "grey36M": (6000, 6000, 1, np.uint8),
    "rgb36M": (3000, 12000, 3, np.uint8),
    "grey16bit40M": (6300, 6300, 1, np.uint16),
}

CHILD = """
import json, sys
import numpy as np
import onnxruntime as ort
from deuterium.data_types.image import decode

path, model, channels, min_side = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if path != "-":
    settings = {"channels": channels, "max_pixels": 40_000_000, "decoded_min_side": min_side}
    x = decode.ImageDecoder(settings).load(path)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    out = session.run(None, {"pixels": x[None]})[0]
    shape = list(x.shape)
else:
    shape = []
# VmHWM: this process's own high-water mark (ru_maxrss would carry the parent's over fork and exec)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_mb": int(hwm.split()[1]) / 1024, "decoded": shape}))
"""


def _image(folder: Path, name: str) -> Path:
    from PIL import Image

    height, width, channels, dtype = CASES[name]
    rng = np.random.default_rng(0)
    small = rng.integers(0, np.iinfo(dtype).max, (height // 100, width // 100, channels), dtype=dtype)
    big = np.kron(small, np.ones((100, 100, 1), dtype))  # blocks: compresses to a small file, as an upload
    path = folder / f"{name}.png"
    Image.fromarray(big[..., 0] if channels == 1 else big).save(path)
    return path


def _front_end(folder: Path, size: int, channels: int) -> Path:
    import torch

    from deuterium.data_types.image.frontend import ImageFrontEnd
    from deuterium.data_types.image.settings import ImageSettings

    model = ImageFrontEnd(ImageSettings(image_size=size, channels=channels)).eval()
    example = torch.zeros(1, size + 3, size + 5, channels, dtype=torch.uint8)
    dims = {"x": {1: torch.export.Dim("height", min=2), 2: torch.export.Dim("width", min=2)}}
    path = folder / f"front{channels}.onnx"
    torch.onnx.export(model, (example,), str(path), input_names=["pixels"], dynamic_shapes=dims, dynamo=True)
    return path


def _peak(args: list[str], code: Path = ROOT) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], cwd=code, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=224, help="image.image_size")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose deuterium decodes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fixed = _peak(["-", "-", "3", "0"])["peak_mb"]
        print(f"imports alone: {fixed:.0f} MB")
        print(f"{'case':>14} {'full MB':>9} {'shrunk MB':>10} {'ratio':>6}  decoded full -> shrunk")
        for name in args.cases.split(","):
            channels = 3 if CASES[name][2] == 3 else 1
            image, model = _image(folder, name), _front_end(folder, args.size, channels)
            full = _peak([str(image), str(model), str(channels), "0"], args.code)
            shrunk = _peak([str(image), str(model), str(channels), str(4 * args.size)], args.code)
            ratio = (shrunk["peak_mb"] - fixed) / (full["peak_mb"] - fixed)
            print(
                f"{name:>14} {full['peak_mb']:9.0f} {shrunk['peak_mb']:10.0f} {ratio:6.3f}  "
                f"{full['decoded']} -> {shrunk['decoded']}  (ratio of the growth above the imports)"
            )


if __name__ == "__main__":
    main()
