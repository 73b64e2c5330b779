"""The image data type: its decoder (sizes, modes, broken files, bombs) and each augmentation's effect on a
real image (a photograph shipped with matplotlib; an MNIST digit from data/mnist)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from projects import REPO, black_png

from deuterium import config
from deuterium.data_types.image import decode
from deuterium.data_types.image.dataset import ImageFiles, transforms
from deuterium.data_types.image.frontend import resize
from deuterium.data_types.image.settings import ImageAugmentation, ImageSettings
from deuterium.errors import ConfigError, InputError

PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"  # 512 x 600 RGB


def mnist_digit(index: int = 0) -> np.ndarray:
    with gzip.open(REPO / "data/mnist/train-images-idx3-ubyte.gz") as f:
        f.seek(16 + 784 * index)
        return np.frombuffer(f.read(784), dtype=np.uint8).reshape(28, 28)


def image_params(**sections) -> dict:
    params = {
        "problem_type": "image_classification",
        "dataset": {"train_dataframe": "train.csv", "data_folder": ".", "label_columns": ["digit"]},
    }
    return params | sections


def as_float(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(2, 0, 1).float() / 255.0


def run(aug: dict, x: np.ndarray, size: int = 64, seed: int = 0, **image) -> torch.Tensor:
    channels = x.shape[2]
    t = transforms(ImageSettings(image_size=size, channels=channels, **image), ImageAugmentation(**aug))
    torch.manual_seed(seed)
    return t(as_float(x))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return decode.ImageDecoder({"channels": 3}).load(PHOTO)


@pytest.fixture(scope="module")
def digit() -> np.ndarray:
    return mnist_digit(0)[..., None]


# --- the decoder ---------------------------------------------------------------------------------------


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")  # the mode follows the array: L, RGBA, I;16
    return buf.getvalue()


def test_decoder_takes_grey_colour_alpha_and_16_bit_as_the_model_needs(photo):
    rgb = decode.ImageDecoder({"channels": 3})
    grey = decode.ImageDecoder({"channels": 1})
    assert photo.shape == (600, 512, 3) and photo.dtype == np.uint8
    digit = _png(mnist_digit(3))
    assert rgb.load(digit).shape == (28, 28, 3)  # grey replicated
    assert np.array_equal(grey.load(digit)[..., 0], mnist_digit(3))  # exactly the pixels
    rgba = np.dstack([np.full((5, 7, 3), 200, np.uint8), np.zeros((5, 7), np.uint8)])
    assert np.all(rgb.load(_png(rgba)) == 200)  # alpha dropped, colour kept
    sixteen = _png(np.full((4, 4), 65535, np.uint16))
    assert np.all(grey.load(sixteen) == 255)  # 16 bits scaled to 8, not clipped garbage
    assert np.array_equal(grey.load(PHOTO), np.asarray(Image.open(PHOTO).convert("L"))[..., None])


def test_decoder_names_the_input_and_refuses_broken_files(tmp_path):
    d = decode.ImageDecoder({"channels": 3})
    with pytest.raises(InputError, match="notes.txt: not a readable image"):
        d.load(b"just text\n" * 50, "notes.txt")
    with pytest.raises(InputError, match="upload: the file is empty"):
        d.load(b"")
    data = PHOTO.read_bytes()
    with pytest.raises(InputError, match="half.jpg: image data is corrupt"):
        d.load(data[: len(data) // 2], "half.jpg")
    png = _png(mnist_digit(0))
    with pytest.raises(InputError, match="cut.png"):
        d.load(png[:-30], "cut.png")


def test_a_decompression_bomb_is_refused_from_its_header():
    data = black_png(20_000, 20_000)
    assert len(data) < 1_000_000  # small on the wire, 400 megapixels decoded
    with pytest.raises(InputError, match="20000x20000 = 400000000 pixels is more than the limit of 1000000"):
        decode.ImageDecoder({"channels": 1, "max_pixels": 1_000_000}).load(data, "bomb.png")
    # too large for Pillow to open at all: still reported against the decoder's own limit
    with pytest.raises(InputError, match=r"900000000 pixels is more than the limit of 40000000 \(image.max"):
        decode.ImageDecoder({"channels": 1}).load(black_png(30_000, 30_000), "bigger.png")


def test_an_empty_file_is_named_empty_whether_a_path_or_an_upload(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    d = decode.ImageDecoder({"channels": 1})
    for source in (tmp_path / "empty.png", b""):
        with pytest.raises(InputError, match="empty.png: the file is empty"):
            d.load(source, "empty.png")


def test_json_pixels_and_base64(digit):
    d = decode.ImageDecoder({"channels": 1, "max_pixels": 10_000})
    assert np.array_equal(d.from_json({"pixels": digit[..., 0].tolist()}), digit)
    import base64

    assert np.array_equal(
        d.from_json({"image_base64": base64.b64encode(_png(digit[..., 0])).decode()}), digit
    )
    for payload, words in (
        ({}, "exactly one"),
        ({"pixels": [[1, 2], [3]]}, "rows of equal length"),
        ({"pixels": [[True, False]]}, "of numbers"),  # JSON's true is not 1
        ({"pixels": [["12", "200"]]}, "of numbers"),  # nor is "12" 12
        ({"pixels": [[{"r": 1}]]}, "of numbers"),
        ({"pixels": [[300]]}, "0 to 255"),
        ({"pixels": [[0] * 200] * 200}, "more than the limit"),
        ({"image_base64": "%%"}, "not valid base64"),
        ({"pixels": [[1]], "extra": 1}, "unknown"),
        ({"pixels": [[1]], "k" * 1_000_000: 1}, r"unknown: 'k{5,}\.\.\.k+'$"),  # not echoed whole
    ):
        with pytest.raises(InputError, match=words):
            d.from_json(payload)


# --- augmentations ---------------------------------------------------------------------------------------


def test_no_augmentation_is_exactly_the_resize(photo):
    plain = resize(as_float(photo)[None], 64, "stretch")[0]
    off = {"horizontal_flip_probability": 0.0, "vertical_flip_probability": 0.0, "rotation_degrees": 0.0}
    for seed in range(3):
        assert torch.equal(run(off, photo, seed=seed), plain)


def test_keep_aspect_ratio_pads_instead_of_stretching(photo):
    kept = run({}, photo, size=60, resize_method="keep_aspect_ratio")  # 512 wide, 600 high: bands left, right
    assert kept[:, :, :3].abs().max() == 0 and kept[:, :, -3:].abs().max() == 0
    assert run({}, photo, size=60)[:, :, :3].abs().max() > 0.1  # stretched: no bands


def test_flips_mirror_the_image(photo):
    plain = run({}, photo)
    assert torch.equal(run({"horizontal_flip_probability": 1.0}, photo), plain.flip(-1))
    assert torch.equal(run({"vertical_flip_probability": 1.0}, photo), plain.flip(-2))
    flipped = [
        not torch.equal(run({"horizontal_flip_probability": 0.5}, photo, seed=s), plain) for s in range(40)
    ]
    assert 8 < sum(flipped) < 32  # about half


def test_random_resized_crop_changes_what_is_kept(digit):
    whole = run(
        {"random_resized_crop": True, "crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0)}, digit, size=28
    )
    assert torch.allclose(whole, run({}, digit, size=28), atol=1e-5)  # the whole image: the plain resize
    parts = [
        run({"random_resized_crop": True, "crop_scale": (0.2, 0.2)}, digit, size=28, seed=s) for s in range(5)
    ]
    assert all(p.shape == (1, 28, 28) for p in parts)
    assert all((p - whole).abs().mean() > 0.05 for p in parts)  # a fifth of the digit, blown up
    assert len({p.sum().item() for p in parts}) == 5  # a different part each draw


def test_colour_jitter_moves_the_statistics_within_the_ranges(photo):
    plain = run({}, photo)
    for seed in range(5):
        bright = run({"brightness": 0.4}, photo, seed=seed)
        ratio = (bright.mean() / plain.mean()).item()
        assert 0.6 - 0.02 <= ratio <= 1.4 + 0.02 and abs(ratio - 1) > 1e-3
        contrast = run({"contrast": 0.4}, photo, seed=seed)
        # contrast blends with the grey mean: the spread scales by a factor within the range
        assert 0.6 - 0.02 <= (contrast.std() / plain.std()).item() <= 1.4 + 0.02
    hue = run({"hue": 0.3}, photo, seed=1)
    assert not torch.allclose(hue, plain, atol=0.05)
    grey_of = lambda x: 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]  # noqa: E731
    desaturated = run({"saturation": 0.9}, photo, seed=3)
    assert (desaturated - plain).abs().max() > 0.01
    assert torch.allclose(grey_of(run({"saturation": 0.0}, photo)), grey_of(plain))


def test_saturation_or_hue_on_a_grey_model_is_refused():
    with pytest.raises(ConfigError, match="augmentation.saturation and augmentation.hue"):
        config.parse(image_params(image={"channels": 1}, augmentation={"hue": 0.1}))
    config.parse(image_params(image={"channels": 1}, augmentation={"brightness": 0.1}))  # fine on grey


def test_rotation_turns_the_digit(digit):
    plain = run({}, digit, size=28)
    turned = [run({"rotation_degrees": 30.0}, digit, size=28, seed=s) for s in range(4)]
    assert sum((t - plain).abs().mean() > 0.01 for t in turned) >= 2  # a small angle may change little
    # the digit is turned, not lost: most of its ink stays
    assert all(0.8 < (t.sum() / plain.sum()).item() < 1.2 for t in turned)


def test_bad_ranges_are_refused():
    for aug, words in (
        ({"crop_scale": [0.9, 0.5]}, "crop_scale"),
        ({"crop_scale": [0.5, 1.5]}, "at most 1"),
        ({"crop_ratio": [0, 1]}, "crop_ratio"),
        ({"horizontal_flip_probability": 1.5}, "horizontal_flip_probability"),
    ):
        with pytest.raises(ConfigError, match=words):
            config.parse(image_params(augmentation=aug))


def test_items_are_reproducible_by_seed_epoch_and_row(tmp_path):
    for i in range(3):
        Image.fromarray(mnist_digit(i)).save(tmp_path / f"{i}.png")
    files = [tmp_path / f"{i}.png" for i in range(3)]
    aug = ImageAugmentation(rotation_degrees=20, horizontal_flip_probability=0.5)
    make = lambda seed: ImageFiles(  # noqa: E731
        files,
        np.eye(3, dtype=np.float32),
        decode.ImageDecoder({"channels": 1}),
        ImageSettings(channels=1, image_size=28),
        aug,
        seed,
    )
    a, b = make(1), make(1)
    assert torch.equal(a[2][0], b[2][0]) and a[2][0].shape == (28, 28, 1)
    b.set_epoch(1)
    assert not torch.equal(a[2][0], b[2][0])  # a new epoch draws anew
    assert not torch.equal(make(2)[2][0], a[2][0])


def test_formats_that_decode_while_opening_are_refused():
    """ICO (and ICNS) decode their embedded image inside Image.open, before any size check could run."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(buf, format="ICO")
    with pytest.raises(
        InputError, match="icon.ico: not a readable image \\(format not recognised; PNG, JPEG"
    ):
        decode.ImageDecoder({"channels": 1}).load(buf.getvalue(), "icon.ico")


def test_a_thin_image_is_refused_by_its_longest_side():
    d = decode.ImageDecoder({"channels": 1, "max_pixels": 10_000})  # squares up to 100 x 100; sides up to 400
    assert d.load(_png(np.zeros((1, 400), np.uint8))).shape == (1, 400, 1)
    with pytest.raises(InputError, match="401x1 has a side longer than the limit of 400"):
        d.load(_png(np.zeros((1, 401), np.uint8)), "thin.png")


def test_32_bit_and_float_images_are_scaled_to_8_bits(tmp_path):
    grey = decode.ImageDecoder({"channels": 1})
    ints = tmp_path / "i.tif"
    Image.fromarray(np.full((3, 3), 65535, np.int32)).save(ints)
    assert np.all(grey.load(ints) == 255)
    floats = tmp_path / "f.tif"
    Image.fromarray(np.full((3, 3), 0.5, np.float32)).save(floats)
    assert np.all(grey.load(floats) == 128)  # [0, 1] floats scaled, not clipped to black


def test_huge_json_numbers_are_a_clear_error():
    with pytest.raises(InputError, match="pixels"):
        decode.ImageDecoder({"channels": 1}).from_json({"pixels": [[10**400]]})


def test_waiting_pieces_of_many_shapes_are_bounded():
    from deuterium.scoring import PieceAverager

    waiting = []
    averager = PieceAverager(
        lambda batch: waiting.append(len(batch)) or np.zeros((len(batch), 2)), batch_size=4
    )
    for size in range(10, 30):  # twenty images of twenty sizes
        averager.add([np.zeros((size, size, 1), np.uint8)])
        assert sum(len(g) for g in averager.pending.values()) < 4
    assert averager.result().shape == (20, 2) and sum(waiting) == 20


def test_16_bit_is_scaled_by_whole_numbers_as_by_floats():
    """Every 16-bit value maps to round(v / 257), as the float64 formula did, without a float copy of the
    image (8 bytes a pixel: 5.6 GB for a 16-bit grey upload near image.max_pixels in the service)."""
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    want = np.round(values.astype(np.float64) / 257).astype(np.uint8)
    assert np.array_equal(decode._to_8_bit(np.asarray(Image.fromarray(values)), "I;16"), want)
    assert np.array_equal(decode.ImageDecoder({"channels": 1}).load(_png(values))[..., 0], want)
    assert decode._to_8_bit(np.array([[-5, 70000]], np.int32), "I").tolist() == [[0, 255]]


def _save(array: np.ndarray, path: Path, **kw) -> Path:
    Image.fromarray(array).save(path, **kw)
    return path


def test_a_large_image_is_shrunk_by_a_whole_factor_keeping_what_the_model_needs(tmp_path, photo):
    """decoded_min_side (4 x image_size): the shorter side stays at least that, so the graph never makes
    float copies of tens of megapixels; training decodes alike. Without the key (a model exported
    before), the image is decoded at its size, as then."""
    big = np.kron(photo, np.ones((4, 4, 1), np.uint8))  # 2400 x 2048, a photo's smooth content
    png, jpeg = _save(big, tmp_path / "big.png"), _save(big, tmp_path / "big.jpg", quality=95)
    shrinking = decode.ImageDecoder({"channels": 3, "decoded_min_side": 4 * 224})
    assert shrinking.load(png).shape == (1200, 1024, 3)  # 2048 // 896 = 2
    assert min(shrinking.load(jpeg).shape[:2]) >= 896  # libjpeg's own 1/2 scale, then nothing more
    assert decode.ImageDecoder({"channels": 3}).load(png).shape == big.shape
    small = decode.ImageDecoder({"channels": 3, "decoded_min_side": 4 * 28})
    assert shrinking.load(PHOTO).shape == photo.shape  # 512 // 896 = 0: as it is
    assert small.load(PHOTO).shape == (150, 128, 3)  # 512 // 112 = 4: libjpeg's 1/4 scale, 128 >= 112
    # what the model sees of it (the graph's resize to 224) barely moves: at most 3 of 255, mean under 0.5
    from_full = run({}, big, size=224)
    from_shrunk = run({}, shrinking.load(png), size=224)
    diff = (from_full - from_shrunk).abs() * 255
    assert diff.max() <= 3 and diff.mean() < 0.5, (diff.max(), diff.mean())
    # the pixels limit is still the image's own, from its header
    tight = decode.ImageDecoder({"channels": 3, "decoded_min_side": 896, "max_pixels": 4_000_000})
    with pytest.raises(InputError, match="more than the limit of 4000000"):
        tight.load(png.read_bytes(), "big.png")


def test_an_image_beyond_pillows_ceiling_names_the_ceiling_not_a_setting_that_cannot_reach_it():
    """A header of 100000 x 100000: more than Pillow opens at all. image.max_pixels cannot be raised to that
    (its maximum is the ceiling), so the message says what the limit is instead of naming the setting."""
    import struct
    import zlib

    from deuterium.data_types.image.decode import CEILING, open_image

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
    with pytest.raises(InputError, match=rf"limit of {CEILING} \(the most any image may have"):
        open_image(header + chunk(b"IEND", b""), "huge.png")
    with pytest.raises(InputError, match=r"limit of 1000 \(image.max_pixels\)"):
        open_image(header + chunk(b"IEND", b""), "huge.png", 1000)
