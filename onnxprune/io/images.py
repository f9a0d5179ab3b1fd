"""Image files as data: a folder of JPEG / PNG / … images, decoded batch by batch with a small preprocessing spec.

Every command that takes `--calib`, `--data`, `--eval`, `--cert-data` or `--recover-data` accepts such a folder
(`io/data.py` routes it here), and the API's `load_dataset(path, model, preprocess={...})` takes the spec as a dict.

Layout (torchvision's `ImageFolder` convention):
- class sub-folders, `root/<class>/**/<image>`: labelled, label = index of the class name in sorted order (or in
  the spec's "classes" list);
- images directly in `root/`: unlabelled (statistics use the model's own predictions, evaluation reports
  agreement).
Files are taken in sorted relative-path order, so the sample order is the same on every machine. Files that are
not images (by extension) are ignored; a folder holding both images and class sub-folders is refused.

The spec is `preprocess.json` in the folder, or a JSON file given as the data path itself with a "folder" key (the
images, relative to the spec file: no need to write into a read-only data folder). Every key is optional:

    {"resize": 256, "crop": 224, "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406],
     "std": [0.229, 0.224, 0.225], "scale": "0-1", "layout": "NCHW", "channel_order": "RGB"}

- resize: int: the shorter side to this many pixels, aspect kept (torchvision `Resize(int)`); [h, w]: exactly;
  false: never. Default: the smallest aspect-kept resize that covers the crop (for a square input: shorter side =
  crop size), so an image already of the model's size is left as it is.
- crop: int or [h, w], a centre crop (torchvision `CenterCrop`). Default: the model input's H×W (required when
  the model leaves them free).
- interpolation: bilinear (default, as torchvision), bicubic (timm's usual), nearest, lanczos, box.
- mean, std: one number or one per channel, applied after `scale`: (x - mean) / std.
- scale: "0-255" (the raw pixel values) or "0-1" (divided by 255, as torchvision's `ToTensor`). Default: "0-1" when
  a mean and std are given and all their values are ≤ 1 (torchvision / timm constants), else "0-255".
- layout: NCHW or NHWC. Default: read from the model input ((C, H, W) → NCHW, (H, W, C) → NHWC, C being 1 or 3);
  a 2-D input (H, W) takes grey images without a channel axis.
- channel_order: RGB (default) or BGR (models trained on OpenCV-decoded images).
- classes: the class folder names in label order (default: sorted), for a model whose label order is not
  alphabetical.
With no spec the defaults give what the bundled `.npz` files hold: raw 0–255 pixels at the model's size, no
normalisation (a model that normalises inside its graph, as the bundled ones do, wants exactly that).

Colour follows the model's channel count: 3 → every image converted to RGB (grey copied to three channels, alpha
dropped, palettes expanded), 1 → grey (ITU-R 601 luma); conversions are counted in a note. 16-bit and float images
are refused (their scale is ambiguous). Values are uint8 when no normalisation is asked for (as small as the
`.npz`), else float32; batches are cast to the model's input dtype like any data.

Memory is flat in the number of images: only the sorted file names are held; pixels are decoded when a batch is
read (`ImageArray`, the same lazy surface as `io/shards.py`'s `LazyArray`: indexing, lazy `take`, pickles as file
names for Ray). Every file's header is read once up front, so an unreadable or truncated-header file, an
unsupported mode, or an image smaller than the crop is one error naming the file before any work starts.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OnnxPruneError
from .runtime import InputSpec
from .shards import LazyArray, _Segment

SPEC_FILE = "preprocess.json"
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
KEYS = ("folder", "resize", "crop", "interpolation", "mean", "std", "scale", "layout", "channel_order", "classes")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box")
_COLOUR_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


@dataclass(frozen=True)
class Preprocess:
    """A validated spec resolved against the model input: every decision explicit."""

    size: tuple[int, int]  # (H, W) fed to the model
    resize: int | tuple[int, int] | None  # shorter side / exact (h, w) / None: never; "cover" resolved per image
    cover: bool  # the default resize: smallest aspect-kept size covering `size`
    interpolation: str
    channels: int  # 3 (RGB) or 1 (grey)
    bgr: bool
    layout: str  # "NCHW", "NHWC" or "HW"
    unit: bool  # divide by 255
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    dtype: np.dtype = field(default=np.dtype(np.uint8))

    @property
    def sample_shape(self) -> tuple[int, ...]:
        h, w = self.size
        return {"NCHW": (self.channels, h, w), "NHWC": (h, w, self.channels), "HW": (h, w)}[self.layout]

    def describe(self) -> str:
        h, w = self.size
        if self.resize is None:
            rs = "no resize"
        elif self.cover:
            rs = f"resize to cover {h}×{w} (aspect kept; {self.interpolation})"
        elif isinstance(self.resize, int):
            rs = f"resize shorter side to {self.resize} ({self.interpolation})"
        else:
            rs = f"resize to {self.resize[0]}×{self.resize[1]} ({self.interpolation})"
        colour = ("BGR" if self.bgr else "RGB") if self.channels == 3 else "grey"
        values = "values 0–1" if self.unit else "raw values 0–255"
        norm = (f", normalised with mean {_fmt(self.mean)} std {_fmt(self.std)}" if self.mean is not None
                else ", no normalisation")
        return f"{colour}, {rs}, centre crop {h}×{w}, {values}{norm}, {self.layout}, {self.dtype.name}"


def _fmt(v) -> str:
    return "(" + ", ".join(f"{x:g}" for x in v) + ")"


# ------------------------------------------------------------------------------------------------------ discovery
def _is_image(p: Path) -> bool:
    return p.suffix.lower() in EXTENSIONS and p.is_file()


def is_image_data(path: str | Path) -> bool:
    """Whether a data path names image files: a `.json` spec file, or a folder without `.npz` / `.npy` files
    (which then must hold images or class sub-folders of images; the reader says what is missing)."""
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() == ".json"
    return p.is_dir() and not any(p.glob("*.npz")) and not any(p.glob("*.npy"))


def read_spec(path: str | Path) -> tuple[Path, dict, str]:
    """(image folder, spec dict, where the spec came from) for a folder or a JSON spec file."""
    p = Path(path)
    if p.is_file():
        spec, where = _load_json(p), str(p)
        if "folder" not in spec:
            raise OnnxPruneError(f"{p}: a preprocessing spec given as the data path needs \"folder\": the image folder "
                                 f"(relative to the spec file)")
        if not isinstance(spec["folder"], str):
            raise OnnxPruneError(f"{p}: \"folder\" must be a path string")
        folder = (p.parent / spec["folder"]).resolve()
        if not folder.is_dir():
            raise OnnxPruneError(f"{p}: \"folder\" {spec['folder']!r} is not a folder ({folder})")
        return folder, spec, where
    f = p / SPEC_FILE
    if f.is_file():
        spec = _load_json(f)
        if "folder" in spec:
            raise OnnxPruneError(f"{f}: \"folder\" is only for a spec file given as the data path; this one is "
                                 f"inside the image folder already")
        return p.resolve(), spec, str(f)
    return p.resolve(), {}, ""


def _load_json(p: Path) -> dict:
    try:
        spec = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OnnxPruneError(f"{p}: not a readable JSON preprocessing spec ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(spec, dict):
        raise OnnxPruneError(f"{p}: a preprocessing spec is a JSON object ({{\"resize\": 256, \"crop\": 224, …}})")
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise OnnxPruneError(f"{p}: unknown preprocessing key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
    return spec


def list_images(folder: Path, classes: list[str] | None = None) -> tuple[list[str], np.ndarray | None, list[str]]:
    """(sorted image paths, labels or None, class names) following the ImageFolder convention."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise OnnxPruneError(f"{folder}: cannot list the image folder ({e.strerror})") from None
    top = [e.path for e in entries if e.is_file() and Path(e.name).suffix.lower() in EXTENSIONS]
    dirs = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    if top and dirs:
        class_like = [d for d in dirs if _walk(folder / d)]
        if class_like:
            raise OnnxPruneError(f"{folder}/ holds both images ({len(top)}) and sub-folders with images "
                                 f"({', '.join(class_like[:3])}{', …' if len(class_like) > 3 else ''}): put every "
                                 f"image in a class sub-folder (labelled) or all directly in the folder (unlabelled)")
    if top and classes is None:
        return top, None, []
    names = list(dirs) if classes is None else list(classes)
    if classes is not None:
        missing = [c for c in names if not (folder / c).is_dir()]
        if missing:
            raise OnnxPruneError(f"{folder}/: no sub-folder for class(es) {', '.join(missing[:5])} of \"classes\"")
        extra = sorted(set(d for d in dirs if _walk(folder / d)) - set(names))
        if extra:
            raise OnnxPruneError(f"{folder}/: sub-folder(s) {', '.join(extra[:5])} hold images but are not in "
                                 f"\"classes\"")
    paths: list[str] = []
    labels: list[int] = []
    for k, name in enumerate(names):
        files = _walk(folder / name)
        if not files:
            raise OnnxPruneError(f"{folder / name}/: class folder holds no images ({', '.join(EXTENSIONS[:5])}, …); "
                                 f"remove it or add images (labels are the sorted class folder names)")
        paths += files
        labels += [k] * len(files)
    if not paths:
        raise OnnxPruneError(f"{folder}/: no data found: expected .npz shards, .npy files, or images "
                             f"({', '.join(EXTENSIONS[:5])}, …) directly in it or in class sub-folders")
    return paths, np.asarray(labels, dtype=np.int64), names


def _walk(folder: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [os.path.join(root, f) for f in sorted(files) if Path(f).suffix.lower() in EXTENSIONS]
    return out


# ------------------------------------------------------------------------------------------------- the spec
def resolve(spec: dict, input_spec: InputSpec, where: str) -> Preprocess:
    """The spec checked and completed from the model input; every bad value is one error naming the key."""
    where = where or "preprocessing"
    dims = input_spec.sample_shape
    layout = spec.get("layout")
    if layout is not None:
        if not isinstance(layout, str) or layout.upper() not in ("NCHW", "NHWC"):
            raise OnnxPruneError(f"{where}: \"layout\" must be \"NCHW\" or \"NHWC\", not {layout!r}")
        layout = layout.upper()
        if len(dims) != 3:
            raise OnnxPruneError(f"{where}: \"layout\" {layout} needs a model input of rank 4; the model's is "
                                 f"{input_spec.describe()}")
    elif len(dims) == 3:
        c_first, c_last = dims[0] in (1, 3), dims[2] in (1, 3)
        if c_first:
            layout = "NCHW"
        elif c_last:
            layout = "NHWC"
        else:
            raise OnnxPruneError(f"image data needs a model input with 1 or 3 channels; the model's is "
                                 f"{input_spec.describe()} (set \"layout\" if the channel axis is free)")
    elif len(dims) == 2:
        layout = "HW"
    else:
        raise OnnxPruneError(f"image data needs a model input of (N, C, H, W), (N, H, W, C) or (N, H, W); the "
                             f"model's is {input_spec.describe()}")
    if layout == "NCHW":
        channels, h, w = dims
    elif layout == "NHWC":
        h, w, channels = dims
    else:
        (h, w), channels = dims, 1
    if channels is None:
        channels = 3
    if channels not in (1, 3):
        raise OnnxPruneError(f"image data gives 1 or 3 channels; the model input {input_spec.describe()} has "
                             f"{channels} ({layout})")
    crop = _size(spec, "crop", where)
    if crop is None:
        if h is None or w is None:
            raise OnnxPruneError(f"{where}: the model input {input_spec.describe()} leaves its height / width free: "
                                 f"give \"crop\": [h, w] (or one number) in {SPEC_FILE}")
        crop = (h, w)
    elif (h is not None and crop[0] != h) or (w is not None and crop[1] != w):
        raise OnnxPruneError(f"{where}: \"crop\" {crop[0]}×{crop[1]} does not match the model input "
                             f"{input_spec.describe()} ({h}×{w})")
    resize: int | tuple[int, int] | None
    raw = spec.get("resize")
    cover = False
    if raw is False:
        resize = None
    elif raw is None:
        resize, cover = crop, True
    else:
        r = _size(spec, "resize", where)
        resize = r[0] if isinstance(raw, (int, float)) else r
        if isinstance(resize, int) and resize < min(crop):
            raise OnnxPruneError(f"{where}: \"resize\" {resize} is smaller than the crop {crop[0]}×{crop[1]}: "
                                 f"the shorter side must be at least {min(crop)}")
        if isinstance(resize, tuple) and (resize[0] < crop[0] or resize[1] < crop[1]):
            raise OnnxPruneError(f"{where}: \"resize\" {resize[0]}×{resize[1]} is smaller than the crop "
                                 f"{crop[0]}×{crop[1]}")
    interp = spec.get("interpolation", "bilinear")
    if interp not in INTERPOLATIONS:
        raise OnnxPruneError(f"{where}: \"interpolation\" must be one of {', '.join(INTERPOLATIONS)}, not {interp!r}")
    order = spec.get("channel_order", "RGB")
    if not isinstance(order, str) or order.upper() not in ("RGB", "BGR"):
        raise OnnxPruneError(f"{where}: \"channel_order\" must be \"RGB\" or \"BGR\", not {order!r}")
    mean, std = _channel_values(spec, "mean", channels, where), _channel_values(spec, "std", channels, where)
    if (mean is None) != (std is None):
        raise OnnxPruneError(f"{where}: give \"mean\" and \"std\" together (std 1 / mean 0 for one alone)")
    if std is not None and min(std) <= 0:
        raise OnnxPruneError(f"{where}: \"std\" must be positive, got {_fmt(std)}")
    scale = spec.get("scale")
    if scale is None:  # torchvision / timm constants (0.485, 0.229, …) are for 0–1 values; mmcv's (123.7, 58.4) raw
        unit = mean is not None and max(abs(v) for v in mean + std) <= 1
    elif scale in ("0-1", "0-255"):
        unit = scale == "0-1"
    else:
        raise OnnxPruneError(f"{where}: \"scale\" must be \"0-1\" (divide by 255) or \"0-255\" (raw), not {scale!r}")
    dtype = np.dtype(np.uint8) if (mean is None and not unit) else np.dtype(np.float32)
    if dtype == np.float32 and np.dtype(input_spec.dtype).kind in "iub":
        raise OnnxPruneError(f"{where}: the model input {input_spec.describe()} takes integers: drop \"mean\" / "
                             f"\"std\" / \"scale\" 0-1 (raw 0–255 pixels)")
    return Preprocess((int(crop[0]), int(crop[1])), resize, cover, interp, int(channels), order.upper() == "BGR",
                      layout, unit, mean, std, dtype)


def _size(spec: dict, key: str, where: str) -> tuple[int, int] | None:
    v = spec.get(key)
    if v is None:
        return None
    ok = lambda x: isinstance(x, int) and not isinstance(x, bool) and x > 0  # noqa: E731
    if ok(v):
        return (v, v)
    if isinstance(v, list) and len(v) == 2 and all(ok(x) for x in v):
        return (v[0], v[1])
    raise OnnxPruneError(f"{where}: \"{key}\" must be a positive integer or [height, width], not {v!r}")


def _channel_values(spec: dict, key: str, channels: int, where: str) -> tuple[float, ...] | None:
    v = spec.get(key)
    if v is None:
        return None
    vals = [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    if (not isinstance(vals, list) or not vals or any(isinstance(x, bool) or not isinstance(x, (int, float))
                                                      or not math.isfinite(x) for x in vals)):
        raise OnnxPruneError(f"{where}: \"{key}\" must be a number or a list of {channels}, not {v!r}")
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) != channels:
        raise OnnxPruneError(f"{where}: \"{key}\" has {len(vals)} values; the model takes {channels} channel(s)")
    return tuple(float(x) for x in vals)


# ------------------------------------------------------------------------------------------------- decoding
def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        raise OnnxPruneError("reading image files needs Pillow: pip install pillow") from None
    return Image


def _open(path: str):
    Image = _pil()
    try:
        return Image.open(path)
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds (UnidentifiedImageError, OSError, SyntaxError…)
        raise OnnxPruneError(f"{path}: not a readable image ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else 'no detail'})") from None


def _check_mode(path: str, mode: str) -> None:
    if mode not in _COLOUR_MODES:
        raise OnnxPruneError(f"{path}: image mode {mode} (16-bit or float pixels) is not supported: save it as 8-bit "
                             f"grey or RGB")


def survey(paths: list[str], pre: Preprocess) -> list[str]:
    """Read every file's header: one error for the first bad file; notes counting the colour conversions."""
    want = "RGB" if pre.channels == 3 else "L"
    converted: dict[str, int] = {}
    other_size = 0
    for p in paths:
        with _open(p) as im:
            _check_mode(p, im.mode)
            if im.mode != want:
                converted[im.mode] = converted.get(im.mode, 0) + 1
            w, h = im.size
            other_size += (h, w) != pre.size
            if pre.resize is None and (h < pre.size[0] or w < pre.size[1]):
                raise OnnxPruneError(f"{p}: image is {h}×{w}, smaller than the crop {pre.size[0]}×{pre.size[1]}, "
                                     f"and \"resize\" is false")
    notes = [] if other_size else [f"all {len(paths)} images are {pre.size[0]}×{pre.size[1]} already: none is "
                                   f"resized or cropped"]
    if converted:
        what = {"L": "grey", "1": "black-and-white", "P": "palette", "RGBA": "RGBA (alpha dropped)",
                "LA": "grey + alpha (alpha dropped)", "RGB": "colour", "CMYK": "CMYK"}
        parts = ", ".join(f"{n} {what.get(m, m)}" for m, n in sorted(converted.items()))
        target = ("RGB (the model takes 3 channels; grey is copied to all three)" if pre.channels == 3
                  else "grey (the model takes 1 channel; ITU-R 601 luma)")
        notes.append(f"{sum(converted.values())} of {len(paths)} images converted to {target}: {parts}")
    return notes


def decode(path: str, pre: Preprocess) -> np.ndarray:
    """One image as the model takes it (per-sample shape `pre.sample_shape`, dtype `pre.dtype`)."""
    with _open(path) as im:
        _check_mode(path, im.mode)
        try:
            im = im.convert("RGB" if pre.channels == 3 else "L")
            im = _resize_crop(im, pre, path)
            a = np.asarray(im, dtype=np.uint8)
        except OnnxPruneError:
            raise
        except Exception as e:  # noqa: BLE001 - a truncated or corrupt body shows only when decoded
            raise OnnxPruneError(f"{path}: not a readable image ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:200] if str(e) else 'no detail'})") from None
    if pre.channels == 3 and pre.bgr:
        a = a[..., ::-1]
    if pre.dtype == np.float32:
        a = a.astype(np.float32)
        if pre.unit:
            a /= np.float32(255)
        if pre.mean is not None:
            shape = (1, 1, pre.channels) if pre.channels == 3 else ()
            a = (a - np.asarray(pre.mean, np.float32).reshape(shape)) / np.asarray(pre.std, np.float32).reshape(shape)
    if pre.layout == "NCHW":
        a = a.transpose(2, 0, 1) if a.ndim == 3 else a[None]
    elif pre.layout == "NHWC" and a.ndim == 2:
        a = a[..., None]
    return a


def _resize_crop(im, pre: Preprocess, path: str):
    Image = _pil()
    method = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
              "lanczos": Image.LANCZOS, "box": Image.BOX}[pre.interpolation]
    ch, cw = pre.size
    w, h = im.size
    if pre.cover:  # the side that binds goes to the crop, the other scales (truncated, as torchvision's Resize)
        if ch / h >= cw / w:
            size = (max(cw, int(ch * w / h)), ch)
        else:
            size = (cw, max(ch, int(cw * h / w)))
        if (w, h) != size:
            im = im.resize(size, method)
    elif isinstance(pre.resize, int):  # torchvision Resize(int): shorter side to `resize`, the longer truncated
        short, long = (w, h) if w <= h else (h, w)
        if short != pre.resize:
            new_long = int(pre.resize * long / short)
            im = im.resize((pre.resize, new_long) if w <= h else (new_long, pre.resize), method)
    elif pre.resize is not None:
        if (h, w) != pre.resize:
            im = im.resize((pre.resize[1], pre.resize[0]), method)
    w, h = im.size
    if h < ch or w < cw:
        raise OnnxPruneError(f"{path}: image is {h}×{w} after resizing, smaller than the crop {ch}×{cw}")
    if (h, w) != (ch, cw):  # torchvision CenterCrop's rounding
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
        im = im.crop((left, top, left + cw, top + ch))
    return im


class ImageArray(LazyArray):
    """Image files presented as one (N, *sample_shape) array, decoded when samples are read."""

    def __init__(self, paths: list[str], pre: Preprocess, index: np.ndarray | None = None) -> None:
        super().__init__([_Segment("", None, len(paths))], pre.sample_shape, pre.dtype, index)
        self.paths, self.pre = paths, pre
        self.finite = True  # decoded pixels (and a checked mean / std) are always finite: no check pass needed

    def __repr__(self) -> str:
        return f"ImageArray(shape={self.shape}, dtype={self.dtype}, {self.pre.describe()})"

    def _view(self, base: np.ndarray) -> "ImageArray":
        return ImageArray(self.paths, self.pre, base)

    def _read(self, pos: np.ndarray) -> np.ndarray:
        base = pos if self.index is None else self.index[pos]
        out = np.empty((len(base), *self.sample_shape), self.dtype)
        for k, i in enumerate(base.tolist()):
            out[k] = decode(self.paths[i], self.pre)
        return out


def read_images(path: str | Path, specs: list[InputSpec], spec: dict | None = None
                ) -> tuple[dict[str, np.ndarray], list[str]]:
    """{"x": ImageArray, "y": labels (class folders only)} and the notes saying what was applied."""
    folder, file_spec, where = read_spec(path)
    if spec is not None:
        unknown = sorted(set(spec) - set(KEYS) - {"folder"})
        if unknown:
            raise OnnxPruneError(f"unknown preprocessing key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
        file_spec, where = {**file_spec, **spec}, (where + " + the given spec" if where else "the given spec")
    if len(specs) != 1:
        raise OnnxPruneError(f"{folder}: an image folder feeds a model with one input; this model has {len(specs)} "
                             f"({', '.join(s.name for s in specs)})")
    classes = file_spec.get("classes")
    if classes is not None and (not isinstance(classes, list) or not classes or len(set(classes)) != len(classes)
                                or not all(isinstance(c, str) and c for c in classes)):
        raise OnnxPruneError(f"{where}: \"classes\" must be a list of distinct class folder names")
    pre = resolve(file_spec, specs[0], where)
    paths, labels, names = list_images(folder, classes)
    notes = survey(paths, pre)
    src = f"spec: {where}" if where else f"defaults from the model input: no {SPEC_FILE} in the folder"
    head = (f"{len(paths)} images in {len(names)} class folders (labels: "
            f"{', '.join(f'{n}={i}' for i, n in enumerate(names[:4]))}{', …' if len(names) > 4 else ''})"
            if labels is not None else f"{len(paths)} unlabelled images")
    notes.insert(0, f"image folder {folder}: {head}; decoded per batch: {pre.describe()} ({src})")
    arrays: dict[str, np.ndarray] = {"x": ImageArray(paths, pre)}
    if labels is not None:
        arrays["y"] = labels
    return arrays, notes
