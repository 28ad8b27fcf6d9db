#!/usr/bin/env python3
"""Generate the reference data for `internvl::processing` (tests/processing.rs).

Writes, under tests/fixtures/processing/:

* images/      small test images in every format and mode the decoder supports
               (JPEG via Pillow/libjpeg-turbo; PNG and GIF through tiny writers in this
               script so that unusual layouts - 16-bit, low bit depths, tRNS, short
               palettes, frame offsets - can be produced);
* refs/*.png   Pillow's outputs as 8-bit RGB PNGs: `Image.open(p).convert("RGB")` of
               every test image, `Image.resize(size, Image.BICUBIC)` of synthetic
               images, and InternVL's `dynamic_preprocess` tiles (stacked vertically);
* refs_float.safetensors  float32 tensors: transformers' CLIPImageProcessor outputs
               and ToTensor+Normalize (torchvision semantics, written with numpy);
* clip_configs/*.json     the preprocessor configs used for those CLIP outputs;
* refs.json    the index that ties all of the above together.

Synthetic source images are not stored: `synth()` below is a pure integer formula
that the Rust tests re-implement, so large resize sources cost no disk space.

Usage (Pillow 13.0.0 was used for the committed data):
    python3 -m venv /tmp/pilvenv
    /tmp/pilvenv/bin/pip install pillow==13.0.0 numpy safetensors transformers==4.37.2
    /tmp/pilvenv/bin/python scripts/gen_processing_refs.py
"""

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, features
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent / "tests/fixtures/processing"
IMAGES = ROOT / "images"
REFS = ROOT / "refs"
CLIP_CONFIGS = ROOT / "clip_configs"

# ----------------------------------------------------------------------------
# Synthetic images (mirrored by `synth` in crates/internvl/tests/processing.rs)
# ----------------------------------------------------------------------------

MASK32 = 0xFFFFFFFF


def mix32(x, y, c, seed):
    """A 32-bit integer hash of (x, y, c, seed); numpy uint64 arrays in and out."""
    h = (x * 0x9E3779B1 + y * 0x85EBCA77 + c * 0xC2B2AE3D + seed * 0x27D4EB2F) & MASK32
    h ^= h >> 15
    h = (h * 0x2C1B3C6D) & MASK32
    h ^= h >> 12
    h = (h * 0x297A2D39) & MASK32
    h ^= h >> 15
    return h


def synth(width, height, seed, noise):
    """[H, W, 3] uint8: gradients + a sharp-edged checkerboard + hashed noise."""
    y, x, c = np.meshgrid(
        np.arange(height, dtype=np.uint64),
        np.arange(width, dtype=np.uint64),
        np.arange(3, dtype=np.uint64),
        indexing="ij",
    )
    gx = x * 255 // max(width - 1, 1)
    gy = y * 255 // max(height - 1, 1)
    gxy = (x + y) * 255 // max(width + height - 2, 1)
    base = np.where(c == 0, gx, np.where(c == 1, gy, gxy)).astype(np.int64)
    block = np.where(((x // 7) + (y // 5)) % 2 == 1, 64, 0).astype(np.int64)
    jitter = (mix32(x, y, c, seed) % (2 * noise + 1)).astype(np.int64) - noise
    return np.clip(base * 3 // 4 + block + jitter, 0, 255).astype(np.uint8)


def synth_image(spec):
    width, height, seed, noise = spec
    return Image.fromarray(synth(width, height, seed, noise), "RGB")


def hash_u8(shape, seed, modulo=256):
    """Hashed pseudo-random integers in [0, modulo) of the given 2-D shape."""
    height, width = shape
    y, x = np.meshgrid(np.arange(height, dtype=np.uint64), np.arange(width, dtype=np.uint64), indexing="ij")
    return (mix32(x, y, np.uint64(7), seed) % modulo).astype(np.int64)


# ----------------------------------------------------------------------------
# A minimal PNG writer (any colour type / bit depth, optional PLTE, tRNS, Adam7)
# ----------------------------------------------------------------------------

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & MASK32)


def _pack_rows(samples, bit_depth):
    """samples: [H, W, C] ints -> list of packed row bytes."""
    rows = []
    for row in samples:
        flat = row.reshape(-1)
        if bit_depth == 16:
            rows.append(flat.astype(">u2").tobytes())
        elif bit_depth == 8:
            rows.append(flat.astype(np.uint8).tobytes())
        else:
            per_byte = 8 // bit_depth
            padded = np.concatenate([flat, np.zeros((-len(flat)) % per_byte, dtype=flat.dtype)])
            groups = padded.reshape(-1, per_byte)
            packed = np.zeros(len(groups), dtype=np.int64)
            for k in range(per_byte):
                packed = (packed << bit_depth) | groups[:, k]
            rows.append(packed.astype(np.uint8).tobytes())
    return rows


def png_bytes(samples, bit_depth, color_type, plte=None, trns=None, interlace=False):
    height, width = samples.shape[:2]
    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += b"".join(b"\x00" + r for r in _pack_rows(sub, bit_depth))
    else:
        raw = b"".join(b"\x00" + r for r in _pack_rows(samples, bit_depth))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    if plte is not None:
        out += _chunk(b"PLTE", np.asarray(plte, dtype=np.uint8).tobytes())
    if trns is not None:
        out += _chunk(b"tRNS", np.asarray(trns, dtype=np.uint8).tobytes() if not isinstance(trns, bytes) else trns)
    return out + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


# ----------------------------------------------------------------------------
# A minimal GIF writer (literal-only LZW, frame offsets, local palettes, tRNS)
# ----------------------------------------------------------------------------


def _lzw_literals(indices, min_code_size):
    """LZW stream of literal codes only, clearing often enough that the code size never grows."""
    clear = 1 << min_code_size
    size = min_code_size + 1
    per_run = max(1, (1 << size) - clear - 3)
    codes = []
    for start in range(0, len(indices), per_run):
        codes.append(clear)
        codes.extend(int(v) for v in indices[start : start + per_run])
    codes.append(clear + 1)
    acc, nbits, out = 0, 0, bytearray()
    for code in codes:
        acc |= code << nbits
        nbits += size
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc & 0xFF)
    blocks = b"".join(bytes([len(out[i : i + 255])]) + bytes(out[i : i + 255]) for i in range(0, len(out), 255))
    return bytes([min_code_size]) + blocks + b"\x00"


def _palette_field(palette):
    """(flag bits, padded palette bytes) for a palette given as a flat list of RGB bytes."""
    entries = len(palette) // 3
    bits = max(1, (entries - 1).bit_length())
    data = np.asarray(palette, dtype=np.uint8).tobytes()
    return 0x80 | (bits - 1), data + b"\x00" * (3 * (1 << bits) - len(data))


def gif_bytes(screen, frames, global_palette=None, background=0):
    flags, gpal = (0, b"") if global_palette is None else _palette_field(global_palette)
    out = b"GIF89a" + struct.pack("<HHBBB", screen[0], screen[1], flags, background, 0) + gpal
    for frame in frames:
        if frame.get("transparency") is not None:
            out += b"!\xf9\x04" + bytes([1 | (frame.get("disposal", 0) << 2)]) + b"\x0a\x00"
            out += bytes([frame["transparency"]]) + b"\x00"
        lflags, lpal = (0, b"") if frame.get("palette") is None else _palette_field(frame["palette"])
        x, y = frame["offset"]
        h, w = frame["indices"].shape
        out += b"," + struct.pack("<HHHHB", x, y, w, h, lflags) + lpal
        out += _lzw_literals(frame["indices"].reshape(-1), frame.get("min_code_size", 8))
    return out + b";"


# ----------------------------------------------------------------------------
# BMP 16-bit (Pillow cannot write it)
# ----------------------------------------------------------------------------


def bmp555_bytes(rgb):
    height, width = rgb.shape[:2]
    r, g, b = (rgb[..., k].astype(np.int64) >> 3 for k in range(3))
    pixels = (r << 10) | (g << 5) | b
    stride = (width * 2 + 3) // 4 * 4
    data = b"".join(pixels[y].astype("<u2").tobytes().ljust(stride, b"\x00") for y in range(height - 1, -1, -1))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 16, 0, len(data), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(data), 0, 0, 54) + info + data


# ----------------------------------------------------------------------------
# Test images
# ----------------------------------------------------------------------------


def pil_save(img, **kwargs):
    buf = io.BytesIO()
    img.save(buf, **kwargs)
    return buf.getvalue()


def make_images():
    """{file name: bytes} of every decoder test image."""
    rgb = synth(61, 47, seed=1, noise=24)
    rgb_img = Image.fromarray(rgb, "RGB")
    gray = rgb[..., 1]
    alpha = hash_u8(gray.shape, seed=5)
    alpha[:, :8] = 0  # fully transparent columns: their colour must survive convert("RGB")
    rgba = np.dstack([rgb, alpha]).astype(np.uint8)
    out = {}

    # JPEG (Pillow links libjpeg-turbo)
    for name, sub in [("420", "4:2:0"), ("444", "4:4:4"), ("422", "4:2:2")]:
        out[f"jpeg_rgb_{name}.jpg"] = pil_save(rgb_img, format="JPEG", quality=90, subsampling=sub)
    out["jpeg_rgb_progressive.jpg"] = pil_save(rgb_img, format="JPEG", quality=85, progressive=True)
    out["jpeg_gray.jpg"] = pil_save(Image.fromarray(gray, "L"), format="JPEG", quality=90)
    k = hash_u8(gray.shape, seed=9, modulo=160).astype(np.uint8)
    cmyk = Image.merge("CMYK", [Image.fromarray(255 - rgb[..., i], "L") for i in range(3)] + [Image.fromarray(k, "L")])
    out["jpeg_cmyk.jpg"] = pil_save(cmyk, format="JPEG", quality=90)

    # PNG: 8-bit
    out["png_rgb8.png"] = png_bytes(rgb, 8, 2)
    out["png_rgb8_adam7.png"] = png_bytes(rgb, 8, 2, interlace=True)
    out["png_rgba8.png"] = png_bytes(rgba, 8, 6)
    out["png_la8.png"] = png_bytes(np.dstack([gray, alpha]), 8, 4)
    out["png_l8.png"] = png_bytes(gray[..., None], 8, 0)
    out["png_l8_trns.png"] = png_bytes(gray[..., None], 8, 0, trns=struct.pack(">H", int(gray[0, 0])))
    out["png_rgb8_trns.png"] = png_bytes(rgb, 8, 2, trns=struct.pack(">HHH", *map(int, rgb[0, 0])))
    # PNG: low bit depths
    for bits in (1, 2, 4):
        out[f"png_l{bits}.png"] = png_bytes((gray[..., None] >> (8 - bits)).astype(np.int64), bits, 0)
    # PNG: palettes (with partial transparency; 4-bit; and indices beyond a short PLTE)
    pal_indices = hash_u8(gray.shape, seed=11)
    palette = hash_u8((1, 768), seed=12).reshape(-1)
    trns = hash_u8((1, 100), seed=13).reshape(-1)
    out["png_p8_trns.png"] = png_bytes(pal_indices[..., None], 8, 3, plte=palette, trns=trns)
    out["png_p4.png"] = png_bytes((pal_indices % 16)[..., None], 4, 3, plte=palette[:48])
    out["png_p8_short_plte.png"] = png_bytes((pal_indices % 24)[..., None], 8, 3, plte=palette[:48])
    # PNG: 16-bit (values whose low byte differs from the high byte; half the gray pixels < 256)
    low = hash_u8(gray.shape, seed=21)
    rgb16 = rgb.astype(np.int64) * 256 + hash_u8(gray.shape, seed=22)[..., None]
    out["png_rgb16.png"] = png_bytes(rgb16, 16, 2)
    out["png_rgba16.png"] = png_bytes(np.dstack([rgb16, alpha * 257 + low]), 16, 6)
    l16 = np.where(hash_u8(gray.shape, seed=23, modulo=2) == 1, gray.astype(np.int64) * 256 + low, low + 10)
    out["png_l16.png"] = png_bytes(l16[..., None], 16, 0)
    out["png_l16_trns.png"] = png_bytes(l16[..., None], 16, 0, trns=struct.pack(">H", int(l16[0, 0])))
    out["png_la16.png"] = png_bytes(np.dstack([l16, alpha * 257]), 16, 4)

    # GIF: Pillow-written 2-frame animation; hand-made first frames with odd layouts
    frames = [Image.fromarray(rgb, "RGB").quantize(64), Image.fromarray(255 - rgb, "RGB").quantize(64)]
    out["gif_anim2.gif"] = pil_save(frames[0], format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    small = (hash_u8((15, 20), seed=31) % 8).astype(np.int64)
    pal8 = list(hash_u8((1, 24), seed=32).reshape(-1))
    out["gif_offset_trns.gif"] = gif_bytes(
        (30, 22), [{"offset": (5, 4), "indices": small, "transparency": 2, "min_code_size": 3}], pal8, background=3
    )
    out["gif_local_palette.gif"] = gif_bytes(
        (20, 15),
        [{"offset": (0, 0), "indices": small, "palette": list(hash_u8((1, 24), seed=33).reshape(-1)), "min_code_size": 3}],
        pal8,
    )
    out["gif_short_palette.gif"] = gif_bytes((40, 30), [{"offset": (0, 0), "indices": hash_u8((30, 40), seed=34)}], [255, 0, 0, 0, 0, 255])
    out["gif_no_palette.gif"] = gif_bytes((40, 30), [{"offset": (0, 0), "indices": hash_u8((30, 40), seed=35)}])
    out["gif_frame_overflow.gif"] = gif_bytes((12, 10), [{"offset": (6, 5), "indices": small, "min_code_size": 3}], pal8)

    # WebP
    out["webp_lossless.webp"] = pil_save(rgb_img, format="WEBP", lossless=True)
    out["webp_lossy.webp"] = pil_save(rgb_img, format="WEBP", quality=80)
    out["webp_lossy_alpha.webp"] = pil_save(Image.fromarray(rgba, "RGBA"), format="WEBP", quality=80)
    out["webp_lossless_alpha.webp"] = pil_save(Image.fromarray(rgba, "RGBA"), format="WEBP", lossless=True, exact=True)

    # BMP
    out["bmp_rgb24.bmp"] = pil_save(rgb_img, format="BMP")
    out["bmp_rgba32.bmp"] = pil_save(Image.fromarray(rgba, "RGBA"), format="BMP")
    out["bmp_p8.bmp"] = pil_save(rgb_img.quantize(100), format="BMP")
    out["bmp_1bit.bmp"] = pil_save(Image.fromarray(gray, "L").convert("1"), format="BMP")
    out["bmp_rgb555.bmp"] = bmp555_bytes(rgb)
    return out


# ----------------------------------------------------------------------------
# Reference computations
# ----------------------------------------------------------------------------

RESIZE_CASES = [
    # (source synth spec (w, h, seed, noise), target (w, h))
    ((97, 61, 2, 40), (56, 56)),
    ((640, 480, 3, 0), (448, 448)),
    ((33, 17, 4, 60), (200, 90)),
    ((300, 200, 5, 0), (1344, 896)),
    ((1000, 10, 6, 30), (10, 1000)),
    ((97, 61, 2, 40), (97, 30)),
    ((97, 61, 2, 40), (200, 61)),
    ((61, 47, 1, 24), (45, 45)),
    ((130, 77, 7, 20), (95, 56)),
    ((1, 1, 8, 0), (56, 56)),
    ((2, 3, 9, 90), (5, 7)),
    ((500, 3, 10, 50), (7, 2)),
    # Pillow 13 resamples vertically first when the height shrinks by more than twice as
    # many pixels as the width: both sides of that boundary.
    ((45, 118, 11, 20), (28, 28)),
    ((45, 118, 11, 20), (64, 40)),
    ((150, 100, 12, 40), (105, 10)),
    ((150, 100, 12, 40), (106, 10)),
]

TILING_CASES = [
    # (source synth spec, min_num, max_num, image_size, use_thumbnail)
    ((130, 77, 7, 20), 1, 12, 56, True),
    ((45, 118, 11, 20), 1, 6, 28, True),
    ((300, 200, 5, 6), 1, 12, 28, False),
]

CLIP_CASES = {
    # name: (source synth spec, preprocessor config)
    "fixture_style": ((130, 77, 7, 20), {
        "crop_size": 56, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": 56}),
    "height_width_no_crop": ((45, 118, 11, 20), {
        "do_center_crop": False, "do_normalize": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3, "size": {"height": 40, "width": 64}}),
    "crop_larger_than_image": ((61, 47, 1, 24), {
        "crop_size": 33, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3, "size": 30}),
    "crop_dict_no_rescale": ((97, 61, 2, 40), {
        "crop_size": {"height": 20, "width": 24}, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "do_rescale": False, "image_mean": [120.0, 110.0, 100.0], "image_std": [60.0, 61.0, 62.0],
        "resample": 3, "size": {"shortest_edge": 24}}),
    "custom_rescale_no_normalize": ((33, 17, 4, 60), {
        "crop_size": 16, "do_center_crop": True, "do_normalize": False, "do_resize": True,
        "rescale_factor": 0.00784313725490196, "resample": 3, "size": 16}),
}

TO_TENSOR_CASES = [(61, 47, 1, 24), (2, 3, 9, 90)]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def dynamic_preprocess(image, min_num, max_num, image_size, use_thumbnail):
    """InternVL-Chat's dynamic_preprocess (README load_image), returning (tiles, grid)."""
    orig_width, orig_height = image.size
    aspect_ratio = orig_width / orig_height
    target_ratios = set(
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if i * j <= max_num and i * j >= min_num
    )
    target_ratios = sorted(target_ratios, key=lambda x: x[0] * x[1])
    best_ratio_diff, best_ratio = float("inf"), (1, 1)
    area = orig_width * orig_height
    for ratio in target_ratios:
        ratio_diff = abs(aspect_ratio - ratio[0] / ratio[1])
        if ratio_diff < best_ratio_diff:
            best_ratio_diff, best_ratio = ratio_diff, ratio
        elif ratio_diff == best_ratio_diff and area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
            best_ratio = ratio
    target_width, target_height = image_size * best_ratio[0], image_size * best_ratio[1]
    blocks = best_ratio[0] * best_ratio[1]
    resized = image.resize((target_width, target_height))  # Pillow's default: BICUBIC
    columns = target_width // image_size
    tiles = [
        resized.crop(((i % columns) * image_size, (i // columns) * image_size,
                      (i % columns + 1) * image_size, (i // columns + 1) * image_size))
        for i in range(blocks)
    ]
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size)))
    return tiles, best_ratio


def to_tensor_normalize(rgb, mean, std):
    """torchvision ToTensor + Normalize in float32: (u8 / 255 - mean) / std, as [3, H, W]."""
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32) / np.float32(255.0)
    return (chw - mean[:, None, None]) / std[:, None, None]


def save_png(img, path):
    # Re-wrap the pixels so that no metadata (e.g. a carried-over "transparency") is written.
    Image.frombytes("RGB", img.size, img.tobytes()).save(path, format="PNG", compress_level=9)


def synth_name(spec):
    return "synth_{}x{}_s{}_n{}".format(*spec)


def main():
    for folder in (IMAGES, REFS, CLIP_CONFIGS):
        folder.mkdir(parents=True, exist_ok=True)
    index = {
        "generator": "scripts/gen_processing_refs.py",
        "versions": {
            "pillow": PIL.__version__,
            "libjpeg_turbo": features.version("libjpeg_turbo"),
            "libwebp": features.version("webp"),
            "numpy": np.__version__,
        },
        "synth": "synth(w, h, seed, noise): see scripts/gen_processing_refs.py",
        "decode": [], "resize": [], "tiling": [], "clip": [], "to_tensor": [],
    }
    floats = {}

    for name, data in sorted(make_images().items()):
        (IMAGES / name).write_bytes(data)
        with Image.open(IMAGES / name) as im:
            mode, size = im.mode, im.size
            ref = im.convert("RGB")
        save_png(ref, REFS / f"decode_{Path(name).stem}.png")
        index["decode"].append({"image": f"images/{name}", "ref": f"refs/decode_{Path(name).stem}.png",
                                "pil_mode": mode, "width": size[0], "height": size[1]})

    for spec, (w, h) in RESIZE_CASES:
        ref_name = f"refs/resize_{synth_name(spec)}_to_{w}x{h}.png"
        save_png(synth_image(spec).resize((w, h), Image.BICUBIC), ROOT / ref_name)
        index["resize"].append({"synth": list(spec), "width": w, "height": h, "ref": ref_name})

    for spec, min_num, max_num, image_size, thumb in TILING_CASES:
        tiles, grid = dynamic_preprocess(synth_image(spec), min_num, max_num, image_size, thumb)
        stacked = Image.new("RGB", (image_size, image_size * len(tiles)))
        for k, tile in enumerate(tiles):
            stacked.paste(tile, (0, k * image_size))
        ref_name = f"refs/tiles_{synth_name(spec)}_min{min_num}_max{max_num}_s{image_size}.png"
        save_png(stacked, ROOT / ref_name)
        index["tiling"].append({"synth": list(spec), "min_num": min_num, "max_num": max_num,
                                "image_size": image_size, "use_thumbnail": thumb, "grid": list(grid),
                                "num_tiles": len(tiles), "ref": ref_name})

    from transformers import CLIPImageProcessor
    import transformers

    index["versions"]["transformers"] = transformers.__version__
    for name, (spec, config) in CLIP_CASES.items():
        config_path = CLIP_CONFIGS / f"{name}.json"
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        processor = CLIPImageProcessor.from_json_file(config_path)  # same path as from_pretrained
        pixels = processor(images=synth_image(spec), return_tensors="np")["pixel_values"][0]
        floats[f"clip/{name}"] = np.ascontiguousarray(pixels.astype(np.float32))
        index["clip"].append({"synth": list(spec), "config": f"clip_configs/{name}.json",
                              "tensor": f"clip/{name}", "shape": list(pixels.shape)})

    for spec in TO_TENSOR_CASES:
        key = f"to_tensor/{synth_name(spec)}"
        floats[key] = np.ascontiguousarray(to_tensor_normalize(synth(*spec), IMAGENET_MEAN, IMAGENET_STD))
        index["to_tensor"].append({"synth": list(spec), "tensor": key})

    save_file(floats, str(ROOT / "refs_float.safetensors"))
    (ROOT / "refs.json").write_text(json.dumps(index, indent=1) + "\n")
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    print(f"wrote {len(index['decode'])} images, {len(index['resize'])} resize, {len(index['tiling'])} tiling, "
          f"{len(index['clip'])} clip cases; fixtures total {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
