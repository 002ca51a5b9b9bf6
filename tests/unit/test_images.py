"""load_image on hostile input, colour modes, EXIF, cropping and the model's standard input."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shazzam.images import (
    ALLOWED_FORMATS,
    MODEL_INPUT_SIZE,
    STANDARD_SIZE,
    Box,
    ImageError,
    centre_view,
    get_subsection_of_image,
    image_format,
    load_image,
    model_input,
    model_views,
    standardise_img,
    to_model_input,
    to_rgb,
    whole_view,
)


SAMPLE_PHOTO = Path(__file__).resolve().parents[2] / "samples" / "queries" / "dress-query.jpg"


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[np.newaxis, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, np.newaxis].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1), "RGB")


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return encode(gradient(), "JPEG", quality=90)


# -- accepted and rejected bytes -------------------------------------------------------------


def test_loads_a_jpeg(jpeg):
    image = load_image(jpeg)
    assert image.mode == "RGB"
    assert image.size == (64, 48)


@pytest.mark.parametrize(
    "make_data, reason",
    [
        (lambda jpeg: b"", "empty"),
        (lambda jpeg: jpeg[: len(jpeg) // 2], "truncated"),
        (lambda jpeg: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not an image in a format we read"),
        (lambda jpeg: b"Just some text.\nNot a picture at all.\n" * 20, "not an image in a format we read"),
    ],
    ids=["empty", "truncated-jpeg", "random-bytes", "text-file"],
)
def test_rejects_bad_bytes(jpeg, make_data, reason):
    with pytest.raises(ImageError, match=reason):
        load_image(make_data(jpeg))


def test_rejects_oversize_byte_count(jpeg):
    with pytest.raises(ImageError, match="more than the 100 allowed"):
        load_image(jpeg, max_bytes=100)
    assert load_image(jpeg, max_bytes=len(jpeg)).size == (64, 48)


def test_a_photo_one_byte_over_the_limit_is_refused(jpeg):
    # the limit a client is told (max_bytes) is the largest photo it may send (read above), and no more
    with pytest.raises(ImageError, match="more than the"):
        load_image(jpeg, max_bytes=len(jpeg) - 1)


def png_bomb(side: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + one byte per pixel
    # Large bombs carry only their first rows: the header alone must get them rejected.
    rows = side if side <= 1000 else 16
    body = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_png_bomb_helper_builds_a_real_png():
    image = Image.open(io.BytesIO(png_bomb(300)))
    assert image.size == (300, 300) and image.mode == "L"
    assert load_image(png_bomb(300)).getpixel((150, 150)) == (0, 0, 0)


@pytest.mark.parametrize(
    "side, reason",
    [(8_000, "8000x8000 = 64000000 pixels"), (20_000, "decompression bomb")],
    ids=["past-our-limit", "past-pillows-limit"],
)
def test_rejects_a_decompression_bomb(side, reason):
    # A valid PNG declaring side x side greyscale pixels, all zero: a few kB that would decode
    # to hundreds of MB. Built by hand because having Pillow encode it takes seconds.
    bomb = png_bomb(side)
    assert len(bomb) < 500_000
    with pytest.raises(ImageError, match=reason):
        load_image(bomb)


def test_max_pixels_is_applied_before_decoding(jpeg):
    with pytest.raises(ImageError, match="pixels"):
        load_image(jpeg, max_pixels=64 * 48 - 1)
    assert load_image(jpeg, max_pixels=64 * 48).size == (64, 48)


def test_rejects_a_format_outside_the_allow_list():
    data = encode(Image.new("RGB", (8, 8), "red"), "PPM")
    with pytest.raises(ImageError, match="PPM is not a format we read") as raised:
        load_image(data)
    assert raised.value.kind == "unsupported"


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"", "empty"),
        (b"<html>hello</html>", "unsupported"),
        (b"\x89PNG\r\n\x1a\n broken", "corrupt"),
    ],
)
def test_each_rejection_says_which_kind_it_is(data, kind):
    with pytest.raises(ImageError) as raised:
        load_image(data)
    assert raised.value.kind == kind


def test_a_broken_heic_is_corrupt_not_foreign():
    with pytest.raises(ImageError) as refused:
        load_image(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    assert refused.value.kind == "corrupt"


def test_heic_photos_from_phones_are_read():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 0, 255)).save(buffer, "HEIF")
    image = load_image(buffer.getvalue())
    assert image.size == (64, 48) and image.mode == "RGB" and image.getpixel((30, 20))[2] > 200


@pytest.mark.parametrize("fmt", sorted(ALLOWED_FORMATS - {"MPO"}))  # an MPO is a JPEG with more pictures after it
def test_every_format_we_read_is_known_by_its_first_bytes(fmt):
    """One list of formats for the scraper and detect: a picture the scraper took for no image
    (a TIFF, a HEIC of some brands) was never fetched again, and one detect refused (an AVIF,
    which Pillow reads) was stored for nothing."""
    data = encode(gradient(), fmt)
    assert image_format(data) == fmt
    assert load_image(data).size == (64, 48)


def test_a_riff_file_that_is_no_webp_is_not_an_image():
    # WAV and AVI files start with RIFF too: taken for a picture, a shop's video or sound would be
    # stored in incoming/ and fail in detect, instead of failing its fetch as "not-an-image".
    assert image_format(b"RIFF\x24\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert image_format(b"RIFF\x24\x00\x00\x00WAVEfmt ") is None
    assert image_format(b"RIFF\x24\x00\x00\x00AVI LIST") is None
    assert image_format(b"<html></html>") is None and image_format(b"\x00\x00\x00\x18ftypmp42") is None  # an MP4 video


# -- EXIF and colour modes -----------------------------------------------------------------


def test_exif_orientation_6_is_applied():
    # Left half red, right half blue; orientation 6 means "rotate 90 degrees clockwise to view".
    image = Image.new("RGB", (80, 40), "red")
    image.paste(Image.new("RGB", (40, 40), "blue"), (40, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = load_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert loaded.size == (40, 80)
    # After a clockwise turn the left (red) half is on top, the blue half at the bottom.
    top, bottom = loaded.getpixel((20, 10)), loaded.getpixel((20, 70))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_palette_image_becomes_rgb():
    image = Image.new("P", (10, 10), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    loaded = load_image(encode(image, "PNG"))
    assert loaded.mode == "RGB"
    assert loaded.getpixel((5, 5)) == (10, 200, 30)


def test_palette_transparency_is_flattened_on_white():
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.paste(1, (0, 0, 5, 10))
    loaded = load_image(encode(image, "PNG", transparency=0))
    assert loaded.mode == "RGB"
    assert loaded.getpixel((2, 5)) == (10, 200, 30)
    assert loaded.getpixel((8, 5)) == (255, 255, 255)  # index 0 is transparent, not black


def test_cmyk_jpeg_becomes_rgb():
    loaded = load_image(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95))
    assert loaded.mode == "RGB"
    red, green, blue = loaded.getpixel((8, 8))
    assert red > 200 and green < 60 and blue < 60


def test_16_bit_greyscale_is_scaled_not_clipped():
    values = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    loaded = load_image(encode(image, "PNG"))
    assert loaded.mode == "RGB"
    # Clipping would make everything from 16384 up 255; scaling keeps the steps apart.
    assert np.asarray(loaded)[0, :, 0].tolist() == [0, 63, 127, 255]


def test_a_dark_photo_stays_as_dark_in_16_bits_or_as_floats():
    dark = np.linspace(0, 100, 64, dtype=np.uint8)[np.newaxis].repeat(8, axis=0)  # nothing bright
    as_8_bits = np.asarray(load_image(encode(Image.fromarray(dark), "PNG")))[..., 0]
    as_16_bits = np.asarray(load_image(encode(Image.fromarray(dark.astype(np.uint16) * 257), "PNG")))[..., 0]
    as_floats = np.asarray(load_image(encode(Image.fromarray(dark.astype(np.float32) / 255), "TIFF")))[..., 0]
    assert np.abs(as_16_bits.astype(int) - as_8_bits).max() <= 1  # not stretched to the photo's own brightest
    assert np.abs(as_floats.astype(int) - as_8_bits).max() <= 1  # 0..1 floats, not black


def test_full_white_in_32_bit_or_float_grey_stays_white():
    """A 32-bit grey image holding 8-bit values (0..255) and a float one holding 0..1 are read as
    such up to their brightest value: white must not come out black or nearly so."""
    as_integers = to_rgb(Image.fromarray(np.array([[0, 255]], dtype=np.int32)))
    as_floats = to_rgb(Image.fromarray(np.array([[0.0, 1.0]], dtype=np.float32)))
    assert as_integers.mode == as_floats.mode == "RGB"
    assert np.asarray(as_integers)[0, :, 0].tolist() == [0, 255]
    assert np.asarray(as_floats)[0, :, 0].tolist() == [0, 255]


@pytest.mark.parametrize("mode", ["RGB", "L", "I;16"])
def test_a_png_transparent_colour_is_flattened_on_white(mode):
    pixels = np.full((10, 10, 3), 200, np.uint8)
    pixels[:, :5] = 0  # the transparent colour (tRNS), on the left half
    image = Image.fromarray(pixels).convert(mode) if mode != "I;16" else Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    key = (0, 0, 0) if mode == "RGB" else 0
    loaded = load_image(encode(image, "PNG", transparency=key))
    assert loaded.getpixel((2, 2)) == (255, 255, 255) and loaded.getpixel((7, 2)) == (200, 200, 200)


def test_la_image_becomes_rgb_on_white():
    image = Image.new("LA", (10, 10), (100, 255))
    image.paste((100, 0), (5, 0, 10, 10))
    loaded = load_image(encode(image, "PNG"))
    assert loaded.mode == "RGB"
    assert loaded.getpixel((2, 2)) == (100, 100, 100)
    assert loaded.getpixel((7, 2)) == (255, 255, 255)


def test_rgba_transparent_pixels_become_white():
    image = Image.new("RGBA", (10, 10), (0, 0, 255, 255))
    image.paste((0, 0, 0, 0), (0, 0, 5, 10))
    loaded = load_image(encode(image, "PNG"))
    assert loaded.mode == "RGB"
    assert loaded.getpixel((2, 2)) == (255, 255, 255)  # transparent black is white, not black
    assert loaded.getpixel((7, 2)) == (0, 0, 255)


def broken_tiff_second_page() -> bytes:
    """A TIFF whose first page is whole and whose next-page pointer leads to a page with no tags."""
    tiff = bytearray(encode(Image.new("RGB", (40, 30), "red"), "TIFF"))
    ifd = int.from_bytes(tiff[4:8], "little")
    entries = int.from_bytes(tiff[ifd : ifd + 2], "little")
    tiff[ifd + 2 + 12 * entries : ifd + 6 + 12 * entries] = len(tiff).to_bytes(4, "little")
    return bytes(tiff + b"\0" * 6)


def truncated_after_first_frame() -> bytes:
    frames = [Image.new("RGB", (60, 40), colour) for colour in ("red", "green", "blue")]
    animated = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    return animated[: len(encode(frames[0], "GIF"))]


BROKEN_EXIF = b"MMy*\x00\x00\x00\x08" + b"\x00" * 20


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(truncated_after_first_frame(), id="gif-cut-after-its-first-frame"),
        pytest.param(broken_tiff_second_page(), id="tiff-with-a-broken-second-page"),
        pytest.param(encode(Image.new("RGB", (40, 30), "red"), "PNG", exif=BROKEN_EXIF), id="png-broken-exif"),
        pytest.param(encode(Image.new("RGB", (40, 30), "red"), "WEBP", exif=BROKEN_EXIF), id="webp-broken-exif"),
    ],
)
def test_a_first_picture_that_is_whole_is_read_whatever_follows_it(data):
    loaded = load_image(data)  # damage after the picture, or in its EXIF, is not the picture's
    assert loaded.mode == "RGB" and loaded.getpixel((5, 5))[0] > 200


def test_a_tiff_of_many_pages_is_read_without_walking_them(monkeypatch):
    from PIL import TiffImagePlugin

    pages_read, reading = [], TiffImagePlugin.TiffImageFile._seek
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "_seek", lambda self, frame: pages_read.append(frame) or reading(self, frame))
    pages = [Image.new("RGB", (2, 2), "red")] * 3
    load_image(encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    assert set(pages_read) == {0}  # counting pages parses every one: tens of thousands took most of a search's timeout


def test_heif_gives_its_primary_image_and_never_decodes_one_over_the_pixel_limit():
    red, blue = Image.new("RGB", (64, 48), (255, 0, 0)), Image.new("RGB", (64, 48), (0, 0, 255))
    loaded = load_image(encode(red, "HEIF", save_all=True, append_images=[blue], primary_index=1, quality=95))
    assert loaded.getpixel((5, 5))[2] > 200  # the primary (blue), which every viewer shows
    huge = Image.new("RGB", (4000, 3000), "grey")
    data = encode(huge, "HEIF", save_all=True, append_images=[blue], primary_index=1, quality=10)
    assert load_image(data, max_pixels=4000 * 3000 - 1).size == (64, 48)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    loaded = load_image(data)
    red, green, blue = loaded.getpixel((4, 4))
    assert red > 200 and blue < 60


# -- cropping ------------------------------------------------------------------------------


def test_subsection_crops_the_box():
    image = gradient(100, 80)
    crop = get_subsection_of_image(image, Box(10, 20, 30, 60))
    assert crop.size == (20, 40)
    assert crop.getpixel((0, 0)) == image.getpixel((10, 20))


def test_subsection_clamps_to_the_image():
    image = gradient(100, 80)
    crop = get_subsection_of_image(image, [-20, -5, 150, 40])
    assert crop.size == (100, 40)
    assert crop.getpixel((0, 0)) == image.getpixel((0, 0))


def test_subsection_accepts_float_boxes():
    assert get_subsection_of_image(gradient(100, 80), (9.6, 0.2, 20.4, 10.0)).size == (10, 10)


@pytest.mark.parametrize(
    "box",
    [[10, 10, 10, 20], [10, 20, 30, 20], [30, 10, 10, 20], [200, 0, 300, 80], [-50, -50, -1, -1]],
    ids=["zero-width", "zero-height", "inverted", "right-of-image", "above-left"],
)
def test_subsection_rejects_empty_boxes(box):
    with pytest.raises(ImageError, match="empty"):
        get_subsection_of_image(gradient(100, 80), box)


# -- standardisation -----------------------------------------------------------------------


def test_standardise_gives_a_256_rgb_square():
    out = standardise_img(Image.new("L", (300, 500), 128))
    assert out.mode == "RGB"
    assert out.size == (STANDARD_SIZE, STANDARD_SIZE)


def _quadrants(width: int, height: int) -> Image.Image:
    """Red left half, blue right half; a green band in the top eighth, a yellow one in the bottom eighth."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    image.paste((0, 255, 0), (0, 0, width, height // 8))
    image.paste((255, 255, 0), (0, height - height // 8, width, height))
    return image


def _has(out: np.ndarray, colour) -> bool:
    return bool((out == colour).all(axis=2).any())


def test_standardise_keeps_the_centre_square_of_a_tall_image():
    # 400x800 -> 256x512 -> the centre 256x256: the top and bottom eighths are gone, the width stays.
    out = np.asarray(standardise_img(_quadrants(400, 800))).astype(int)
    assert tuple(out[2, 2]) == (255, 0, 0) and tuple(out[-3, -3]) == (0, 0, 255)
    assert not _has(out, (0, 255, 0)) and not _has(out, (255, 255, 0))
    red_columns = np.flatnonzero((out[STANDARD_SIZE // 2] == (255, 0, 0)).all(axis=1))
    assert abs(len(red_columns) - 128) <= 2  # the whole left half


def test_standardise_keeps_the_centre_square_of_a_wide_image():
    out = np.asarray(standardise_img(_quadrants(800, 400)))
    middle = STANDARD_SIZE // 2
    # 800x400 -> 512x256 -> centre: the left quarter (red) and right quarter (blue) are cut away equally.
    assert tuple(out[middle, 2]) == (255, 0, 0) and tuple(out[middle, -3]) == (0, 0, 255)
    assert tuple(out[5, middle]) == (0, 255, 0)  # the top band survives: only the sides are cut


def test_standardise_upscales_a_tiny_crop():
    assert standardise_img(Image.new("RGB", (10, 30), (1, 2, 3))).size == (STANDARD_SIZE, STANDARD_SIZE)


def _resized_whole_then_cropped(image: Image.Image) -> np.ndarray:
    """The centre square the plain way: resize the whole image, then crop (what standardise_img does
    for every image but a sliver)."""
    scale = STANDARD_SIZE / min(image.size)
    resized = image.resize((max(STANDARD_SIZE, round(image.width * scale)), max(STANDARD_SIZE, round(image.height * scale))),
                           Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (resized.width - STANDARD_SIZE) // 2, (resized.height - STANDARD_SIZE) // 2
    return np.asarray(resized.crop((left, top, left + STANDARD_SIZE, top + STANDARD_SIZE)), dtype=int)


@pytest.mark.parametrize("size", [(5000, 700), (700, 5000), (4001, 600)])
def test_standardise_gives_a_sliver_the_same_square_without_resizing_it_whole(size, monkeypatch):
    photo = Image.open(io.BytesIO(SAMPLE_PHOTO.read_bytes())).convert("RGB").resize(size)
    expected = _resized_whole_then_cropped(photo)
    asked = []
    resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, to, *a, **k: asked.append(to) or resize(self, to, *a, **k))
    out = np.asarray(standardise_img(photo), dtype=int)
    assert np.abs(out - expected).max() <= 1  # rounding
    assert asked == [(STANDARD_SIZE, STANDARD_SIZE)]  # never the strip


def test_standardise_handles_a_box_one_pixel_high():
    sliver = Image.new("RGB", (100_000, 1), (10, 20, 30))
    assert np.array_equal(np.unique(np.asarray(standardise_img(sliver)).reshape(-1, 3), axis=0), [[10, 20, 30]])


def test_standardise_resizes_a_photo_up_to_the_aspect_limit_whole():
    photo = Image.open(io.BytesIO(SAMPLE_PHOTO.read_bytes())).convert("RGB").resize((1000, 300))
    assert np.array_equal(np.asarray(standardise_img(photo), dtype=int), _resized_whole_then_cropped(photo))


def test_centre_view_is_the_imagenet_crop():
    # Resize the shorter side to 256, cut the centre 224: what every model was trained and exported on.
    image = gradient(300, 500)
    resized = image.resize((256, round(500 * 256 / 300)), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (resized.width - 224) // 2, (resized.height - 224) // 2
    expected = np.asarray(resized.crop((left, top, left + 224, top + 224)))
    np.testing.assert_array_equal(np.asarray(centre_view(standardise_img(image))), expected)
    np.testing.assert_array_equal(to_model_input(image)[0], expected.astype(np.float32))


def test_whole_view_keeps_the_edges_the_centre_view_cuts():
    standardised = standardise_img(_quadrants(800, 400))  # green band on top, 32 rows of 256
    centre, whole = np.asarray(centre_view(standardised)), np.asarray(whole_view(standardised))
    assert centre.shape == whole.shape == (MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3)
    green_rows = [int((view == (0, 255, 0)).all(axis=2).any(axis=1).sum()) for view in (centre, whole)]
    # about 16 of its 32 rows (less a blended edge row), against all 32 at 224/256 scale (28)
    assert abs(green_rows[0] - 15.5) <= 1 and abs(green_rows[1] - 27.5) <= 1


def test_model_views_batch_in_the_order_named():
    standardised = standardise_img(gradient(300, 200))
    batch = model_views(standardised, ("centre", "whole"))
    assert batch.shape == (2, MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], model_input(centre_view(standardised))[0])
    np.testing.assert_array_equal(batch[1], model_input(whole_view(standardised))[0])
    with pytest.raises(ValueError, match="unknown model views"):
        model_views(standardised, ("centre", "zoomed"))


def test_views_refuse_an_image_that_was_not_standardised():
    with pytest.raises(ValueError, match="256x256 RGB image from standardise_img"):
        centre_view(Image.new("RGB", (224, 224)))
    with pytest.raises(ValueError, match="224x224 RGB view"):
        model_input(Image.new("RGB", (256, 256)))


def test_model_input_shape_dtype_range_and_determinism(jpeg):
    first = to_model_input(load_image(jpeg))
    second = to_model_input(load_image(bytes(jpeg)))
    assert first.dtype == np.float32
    assert first.shape == (1, MODEL_INPUT_SIZE, MODEL_INPUT_SIZE, 3)
    assert first.min() >= 0 and first.max() <= 255
    assert first.max() > 1.5  # raw 0..255, not rescaled to 0..1
    np.testing.assert_array_equal(first, second)


def test_model_input_differs_for_different_images(jpeg):
    other = encode(gradient().transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG", quality=90)
    assert not np.array_equal(to_model_input(load_image(jpeg)), to_model_input(load_image(other)))


def declaring(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0) declaring width x height: what is read before decoding."""
    frame = jpeg.index(b"\xff\xc0") + 5  # marker, length, precision
    return jpeg[:frame] + struct.pack(">HH", height, width) + jpeg[frame + 4 :]


def test_a_catalogue_jpeg_over_the_pixel_limit_is_decoded_at_a_reduced_scale_and_nothing_else_is(jpeg):
    """A shop's 48-megapixel photo was stored, then refused by detect for good: its product had no
    picture. A JPEG is decoded at half its size or less (libjpeg scales as it decodes: the
    full-size pixels never exist); any other format, or a larger JPEG, is refused before decoding."""
    half = load_image(jpeg, max_pixels=64 * 48 - 1, shrinkable_pixels=64 * 48)
    assert half.size == (32, 24) and abs(np.asarray(half, float).mean() - np.asarray(load_image(jpeg), float).mean()) < 2
    assert load_image(jpeg, max_pixels=64 * 48 // 4 - 1, shrinkable_pixels=64 * 48).size == (16, 12)  # a quarter
    with pytest.raises(ImageError, match="pixels") as refused:
        load_image(jpeg, max_pixels=64 * 48 - 1, shrinkable_pixels=64 * 48 - 1)
    assert refused.value.kind == "too_large"
    with pytest.raises(ImageError, match="pixels"):
        load_image(encode(gradient(), "PNG"), max_pixels=64 * 48 - 1, shrinkable_pixels=64 * 48)


def test_load_catalogue_image_and_the_scrapers_check_agree_on_what_is_too_large():
    from shazzam.images import CATALOGUE_SHRINKABLE_PIXELS, MAX_PIXELS, check_catalogue_size, load_catalogue_image

    small = encode(gradient(), "JPEG")
    over_shrinkable = declaring(small, 8001, CATALOGUE_SHRINKABLE_PIXELS // 8000)  # read from its header only
    with pytest.raises(ImageError, match="pixels"):
        check_catalogue_size(over_shrinkable)
    with pytest.raises(ImageError, match="pixels"):
        load_catalogue_image(over_shrinkable)
    with pytest.raises(ImageError, match="pixels"):
        check_catalogue_size(png_bomb(int(MAX_PIXELS**0.5) + 1))  # not a JPEG: no reduced decoding
    check_catalogue_size(declaring(small, 8000, CATALOGUE_SHRINKABLE_PIXELS // 8000))  # decoded at half size
    check_catalogue_size(b"<html></html>")  # not an image: for load_image to say


def test_random_bytes_with_a_jpeg_header_are_rejected():
    data = b"\xff\xd8\xff\xe0" + os.urandom(2048)
    with pytest.raises(ImageError):
        load_image(data)


# The peak resident memory of this process's image (VmHWM; ru_maxrss would carry over the forking
# parent's, however large the test run has grown).
MEASURE_PEAK = """
import re, sys
from shazzam.images import load_catalogue_image, standardise_img
data = open(sys.argv[1], "rb").read()
standardise_img(load_catalogue_image(data))
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) // 1024)
"""


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P-transparent", "I;16", "CMYK-progressive-JPEG"])
def test_the_largest_photo_accepted_fits_the_standardise_functions_memory(tmp_path, mode):
    """A 40-megapixel photo can be a small file (a flat colour compresses to almost nothing); the
    stages that decode it (detect and standardise, 1 GB each) must not be killed for memory,
    whatever its colour mode. A JPEG is taken up to CATALOGUE_SHRINKABLE_PIXELS, decoded at half
    its size; a progressive one keeps every coefficient of the full size while it decodes."""
    import subprocess
    import sys

    from shazzam import wiring
    from shazzam.images import CATALOGUE_SHRINKABLE_PIXELS, MAX_PIXELS

    side = int(MAX_PIXELS**0.5)
    path = tmp_path / "large.png"
    if mode == "CMYK-progressive-JPEG":
        side = int(CATALOGUE_SHRINKABLE_PIXELS**0.5)
        path = tmp_path / "large.jpg"
        Image.new("CMYK", (side, side), (30, 90, 0, 20)).save(path, "JPEG", progressive=True)
    else:
        if mode == "I;16":
            image = Image.fromarray(np.full((side, side), 300, np.uint16))
        elif mode == "P-transparent":
            image = Image.new("P", (side, side), 0)
        else:
            image = Image.new(mode, (side, side))
        image.save(path, "PNG", compress_level=1, **({"transparency": 0} if mode == "P-transparent" else {}))
        del image
    peak_mb = int(subprocess.run([sys.executable, "-c", MEASURE_PEAK, str(path)], capture_output=True, text=True, check=True).stdout)
    assert peak_mb < 0.85 * wiring.by_name("standardise").memory_mb, peak_mb


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_a_wide_grey_photo_is_made_8_bit_with_temporaries_of_a_band_not_of_the_photo(dtype):
    """A 40-megapixel float TIFF made the search function (1,536 MB) run out of memory: each step
    of the conversion made a full-size temporary. Here a 16-megapixel grey photo's conversion
    may take its 8-bit result and a few bands, well under the photo's own size."""
    import tracemalloc

    from shazzam.images import _eight_bit_grey

    array = np.full((4000, 4000), 0.5 if dtype == np.float32 else 30000, dtype)
    array[0, 0] = np.nan if dtype == np.float32 else 65535
    tracemalloc.start()
    try:
        grey = _eight_bit_grey(array, "F" if dtype == np.float32 else "I")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert grey.dtype == np.uint8 and grey[1, 1] == (127 if dtype == np.float32 else 116) and grey[0, 0] == (0 if dtype == np.float32 else 255)
    assert peak < 0.6 * array.nbytes
