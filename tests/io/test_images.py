"""Image folders as data: class sub-folders give labels, a small spec gives the preprocessing (defaults from the
model input), pixels are decoded batch by batch, and every bad file or spec value is one clear error."""
from __future__ import annotations

import json
import pickle
import tracemalloc

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from PIL import Image

from builders import convnet, edge_conv
from onnxprune.cli import main
from onnxprune.criteria.needs import default_requests
from onnxprune.errors import OnnxPruneError
from onnxprune.io.data import load_dataset
from onnxprune.io.images import ImageArray
from onnxprune.measure.evaluate import evaluate
from onnxprune.stats import collect


def images(n: int, h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def write_classes(root, x: np.ndarray, y: np.ndarray, names=("cat", "ant", "bee"), fmt: str = "png"):
    """ImageFolder layout: root/<class>/<k>.<fmt>; returns root."""
    for k, (img, label) in enumerate(zip(x, y)):
        d = root / names[label]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{k:04d}.{fmt}")
    return root


def identity(shape, elem=TensorProto.FLOAT) -> onnx.ModelProto:
    """input → Identity → output: a model whose input shape / dtype is all that matters."""
    g = helper.make_graph([helper.make_node("Identity", ["input"], ["out"])], "id",
                          [helper.make_tensor_value_info("input", elem, ["N", *shape])],
                          [helper.make_tensor_value_info("out", elem, ["N", *shape])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m


def pixels(path, model, **kw) -> np.ndarray:
    return np.asarray(load_dataset(path, model, **kw).inputs["input"])


@pytest.fixture()
def labelled(tmp_path):
    x, y = images(30), np.arange(30) % 3
    return write_classes(tmp_path / "imgs", x, y), x, y


def test_class_folders_are_labels_in_sorted_name_order_and_pixels_are_exact(labelled):
    root, x, y = labelled
    d = load_dataset(root, convnet())
    assert isinstance(d.inputs["input"], ImageArray) and len(d) == 30
    # sorted class names: ant=0, bee=1, cat=2; written as cat=0, ant=1, bee=2; files sorted within each class
    order = np.concatenate([np.flatnonzero(y == 1), np.flatnonzero(y == 2), np.flatnonzero(y == 0)])
    np.testing.assert_array_equal(d.labels, np.repeat([0, 1, 2], 10))
    got = np.asarray(d.inputs["input"])
    assert got.dtype == np.uint8 and got.shape == (30, 3, 8, 8)  # raw pixels, NCHW, like the bundled .npz
    np.testing.assert_array_equal(got, x[order].transpose(0, 3, 1, 2))
    assert "labels: ant=0, bee=1, cat=2" in d.notes[0] and "no normalisation" in d.notes[0]
    assert any("none is resized or cropped" in n for n in d.notes)


def test_an_image_folder_gives_the_same_statistics_and_evaluation_as_the_npz(labelled, tmp_path):
    root, _, _ = labelled
    m = convnet()
    folder = load_dataset(root, m)
    np.savez(tmp_path / "same.npz", x=np.asarray(folder.inputs["input"]), y=folder.labels)
    npz = load_dataset(tmp_path / "same.npz", m)
    reqs = default_requests(m, "all")
    a, b = collect(m, npz, reqs, batch_size=8, labels="true"), collect(m, folder, reqs, batch_size=8, labels="true")
    for k, v in a._a.items():
        np.testing.assert_allclose(b._a[k], v, rtol=1e-10, atol=1e-12, err_msg=str(k))
    assert evaluate(m, folder, batch_size=7).accuracy == evaluate(m, npz, batch_size=7).accuracy


def test_a_flat_folder_is_unlabelled_and_ordered_by_file_name(tmp_path):
    x = images(5)
    for k, name in enumerate(["b.png", "a.png", "c.PNG", "e.bmp", "d.png"]):
        Image.fromarray(x[k]).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image: ignored")
    d = load_dataset(tmp_path, convnet())
    assert d.labels is None and len(d) == 5
    np.testing.assert_array_equal(np.asarray(d.inputs["input"]), x[[1, 0, 2, 4, 3]].transpose(0, 3, 1, 2))


def test_default_resize_covers_the_input_then_centre_crops_like_torchvision(tmp_path):
    img = images(1, h=16, w=24)[0]
    Image.fromarray(img).save(tmp_path / "a.png")
    got = pixels(tmp_path, convnet())[0]
    # torchvision Resize(8) (shorter side 16 → 8, longer 24 → 12) + CenterCrop(8) (left = round((12 - 8) / 2))
    ref = np.asarray(Image.fromarray(img).resize((12, 8), Image.BILINEAR).crop((2, 0, 10, 8)))
    np.testing.assert_array_equal(got, ref.transpose(2, 0, 1))


def test_resize_crop_and_interpolation_from_the_spec(tmp_path):
    img = images(1, h=20, w=30)[0]
    Image.fromarray(img).save(tmp_path / "a.png")
    spec = tmp_path / "preprocess.json"
    spec.write_text(json.dumps({"resize": 10, "interpolation": "bicubic"}))  # shorter side 10 → 10×15, crop 8×8
    ref = np.asarray(Image.fromarray(img).resize((15, 10), Image.BICUBIC).crop((4, 1, 12, 9)))  # round(3.5) = 4
    np.testing.assert_array_equal(pixels(tmp_path, convnet())[0], ref.transpose(2, 0, 1))
    spec.write_text(json.dumps({"resize": False}))  # crop only: rows round((20-8)/2) = 6.., columns 11..
    np.testing.assert_array_equal(pixels(tmp_path, convnet())[0], img[6:14, 11:19].transpose(2, 0, 1))


def test_normalisation_as_torchvision_and_the_scale_it_implies(labelled):
    root, _, _ = labelled
    raw = pixels(root, convnet()).astype(np.float32)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    d = load_dataset(root, convnet(), preprocess={"mean": mean, "std": std})  # ToTensor (0–1) + Normalize
    want = (raw / 255 - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    got = np.asarray(d.inputs["input"])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert "values 0–1, normalised with mean (0.485, 0.456, 0.406)" in d.notes[0]
    mmcv = pixels(root, convnet(), preprocess={"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]})
    np.testing.assert_allclose(mmcv[:, 0], (raw[:, 0] - 123.675) / 58.395, rtol=1e-5)  # 0–255 means: raw values
    unit = pixels(root, convnet(), preprocess={"scale": "0-1"})
    np.testing.assert_allclose(unit, raw / 255, rtol=1e-6)


def test_layout_comes_from_the_model_and_bgr_reverses_channels(labelled):
    root, _, _ = labelled
    nchw = pixels(root, convnet())
    np.testing.assert_array_equal(pixels(root, identity([8, 8, 3])), nchw.transpose(0, 2, 3, 1))
    bgr = pixels(root, convnet(), preprocess={"channel_order": "BGR"})
    np.testing.assert_array_equal(bgr, nchw[:, ::-1])


def test_colour_is_converted_to_what_the_model_takes_and_said(tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    Image.fromarray(images(1)[0]).convert("RGBA").save(tmp_path / "r.png")
    d = load_dataset(tmp_path, convnet())
    got = np.asarray(d.inputs["input"])
    np.testing.assert_array_equal(got[0], np.stack([grey] * 3))  # grey copied to the three channels
    assert any("2 of 2 images converted to RGB" in n and "1 grey" in n and "alpha dropped" in n for n in d.notes)
    one = load_dataset(tmp_path, edge_conv())  # a 1-channel model: colour → luma
    assert np.asarray(one.inputs["x"]).shape == (2, 1, 8, 8)
    assert any("1 of 2 images converted to grey" in n for n in one.notes)


def test_a_spec_file_can_be_the_data_path_and_name_the_folder(labelled, tmp_path):
    root, _, _ = labelled
    spec = tmp_path / "val.json"
    spec.write_text(json.dumps({"folder": "imgs", "scale": "0-1"}))
    d = load_dataset(spec, convnet())
    assert len(d) == 30 and d.inputs["input"].dtype == np.float32 and str(spec) in d.notes[0]


def test_a_spec_file_without_a_folder_or_a_spec_for_other_data_is_refused(labelled, tmp_path):
    spec = tmp_path / "val.json"
    spec.write_text(json.dumps({"crop": 8}))
    with pytest.raises(OnnxPruneError, match=r"val\.json: a preprocessing spec given as the data path needs"):
        load_dataset(spec, convnet())
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(OnnxPruneError, match=r"d\.npz: a preprocessing spec is for image folders"):
        load_dataset(tmp_path / "d.npz", convnet(), preprocess={"crop": 8})


def test_model_with_free_height_and_width_needs_a_crop(labelled):
    root, _, _ = labelled
    free = identity([3, "H", "W"])
    with pytest.raises(OnnxPruneError, match=r"leaves its height / width free: give \"crop\""):
        load_dataset(root, free)
    assert pixels(root, free, preprocess={"crop": [6, 4]}).shape == (30, 3, 6, 4)


@pytest.mark.parametrize("spec, message", [
    ({"resize": -3}, r"\"resize\" must be a positive integer or \[height, width\]"),
    ({"resize": 4}, r"\"resize\" 4 is smaller than the crop 8×8"),
    ({"crop": 7}, r"\"crop\" 7×7 does not match the model input"),
    ({"mean": [0.5, 0.5], "std": [1, 1]}, r"\"mean\" has 2 values; the model takes 3 channel"),
    ({"mean": 0.5, "std": 0}, r"\"std\" must be positive"),
    ({"mean": 0.5}, r"give \"mean\" and \"std\" together"),
    ({"scale": "0-2"}, r"\"scale\" must be \"0-1\""),
    ({"layout": "CHW"}, r"\"layout\" must be \"NCHW\" or \"NHWC\""),
    ({"interpolation": "cubic"}, r"\"interpolation\" must be one of bilinear"),
    ({"channel_order": "GRB"}, r"\"channel_order\" must be"),
    ({"reszie": 8}, r"unknown preprocessing key\(s\) reszie"),
    ({"classes": ["ant", "ant"]}, r"\"classes\" must be a list of distinct"),
    ({"classes": ["ant", "bee"]}, r"sub-folder\(s\) cat hold images but are not in \"classes\""),
])
def test_a_bad_spec_value_is_one_error_naming_the_key(labelled, spec, message):
    root, _, _ = labelled
    (root / "preprocess.json").write_text(json.dumps(spec))
    with pytest.raises(OnnxPruneError, match=message) as e:
        load_dataset(root, convnet())
    assert "\n" not in str(e.value)


def test_an_unreadable_spec_file_is_one_error(labelled):
    root, _, _ = labelled
    (root / "preprocess.json").write_text("{resize: 8")
    with pytest.raises(OnnxPruneError, match=r"preprocess\.json: not a readable JSON preprocessing spec"):
        load_dataset(root, convnet())


def test_classes_in_the_spec_set_the_label_order(labelled):
    root, x, y = labelled
    d = load_dataset(root, convnet(), preprocess={"classes": ["cat", "ant", "bee"]})  # the order written
    np.testing.assert_array_equal(d.labels, np.repeat([0, 1, 2], 10))
    np.testing.assert_array_equal(np.asarray(d.inputs["input"][10]), x[np.flatnonzero(y == 1)[0]].transpose(2, 0, 1))


def test_bad_files_and_folders_are_one_error_naming_them(tmp_path, labelled):
    root, _, _ = labelled
    (root / "bee" / "broken.jpg").write_text("this is not a JPEG")
    with pytest.raises(OnnxPruneError, match=r"bee/broken\.jpg: not a readable image"):
        load_dataset(root, convnet())
    (root / "bee" / "broken.jpg").unlink()
    Image.new("I;16", (8, 8)).save(root / "bee" / "deep.png")
    with pytest.raises(OnnxPruneError, match=r"deep\.png: image mode I;16 \(16-bit or float pixels\) is not supported"):
        load_dataset(root, convnet())
    (root / "bee" / "deep.png").unlink()
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(OnnxPruneError, match=r"empty/: class folder holds no images"):
        load_dataset(root, convnet())
    (tmp_path / "nothing").mkdir()
    with pytest.raises(OnnxPruneError, match=r"nothing/: no data found: expected \.npz shards, \.npy files, or images"):
        load_dataset(tmp_path / "nothing", convnet())
    Image.fromarray(images(1)[0]).save(tmp_path / "imgs" / "stray.png")
    with pytest.raises(OnnxPruneError, match=r"holds both images \(1\) and sub-folders with images"):
        load_dataset(tmp_path / "imgs", convnet())


def test_a_truncated_image_body_is_one_error_when_its_batch_is_read(tmp_path):
    Image.fromarray(images(1, 64, 64)[0]).save(tmp_path / "a.jpg", quality=95)
    raw = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(raw[:len(raw) // 2])  # the header is intact: only decoding finds it
    d = load_dataset(tmp_path, convnet())
    with pytest.raises(OnnxPruneError, match=r"a\.jpg: not a readable image \(OSError"):
        next(d.batches(4))


def test_more_class_folders_than_the_model_has_classes_is_refused(tmp_path):
    write_classes(tmp_path, images(5), np.arange(5), names=("a", "b", "c", "d", "e"))
    with pytest.raises(OnnxPruneError, match=r"'y' has labels up to 4, but the model's output gives 3 classes"):
        load_dataset(tmp_path, convnet(out=3))


def test_integer_model_input_refuses_normalisation(labelled):
    root, _, _ = labelled
    u8 = identity([3, 8, 8], TensorProto.UINT8)
    assert pixels(root, u8).dtype == np.uint8
    with pytest.raises(OnnxPruneError, match=r"takes integers: drop \"mean\""):
        load_dataset(root, u8, preprocess={"mean": 0.5, "std": 0.25})


def test_views_subsets_and_pickling_decode_the_same_pixels(labelled):
    root, _, _ = labelled
    d = load_dataset(root, convnet())
    full = np.asarray(d.inputs["input"])
    idx = np.array([29, 3, 3, 17, 0])
    sub = d.subset(idx)
    assert isinstance(sub.inputs["input"], ImageArray)
    np.testing.assert_array_equal(np.asarray(sub.inputs["input"]), full[idx])
    np.testing.assert_array_equal(np.asarray(d.range(10, 20).inputs["input"]), full[10:20])
    again = pickle.loads(pickle.dumps(d.inputs["input"]))  # what a Ray task receives: file names, no pixels
    assert len(pickle.dumps(d.inputs["input"])) < full.nbytes
    np.testing.assert_array_equal(again[5:9], full[5:9])


def _pass_peak(root, m) -> int:
    tracemalloc.start()
    try:
        d = load_dataset(root, m)
        for _ in d.batches(10):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_flat_in_the_number_of_images(tmp_path):
    m = convnet()
    x = images(400, 32, 32)  # decoded to 8×8; each source image is 3 KB of pixels
    small = write_classes(tmp_path / "small", x[:100], np.arange(100) % 3)
    big = write_classes(tmp_path / "big", x, np.arange(400) % 3)
    p_small, p_big = _pass_peak(small, m), _pass_peak(big, m)
    # what grows with N: a file name (~100 bytes) and a label (8 bytes) per image; never the pixels
    assert p_big - p_small < 300 * 400, (p_small, p_big)
    assert p_big < 400 * 32 * 32 * 3  # less than the big folder's decoded source pixels


def test_cli_eval_on_an_image_folder_and_its_errors(labelled):
    root, _, _ = labelled
    m = convnet()
    onnx.save(m, root.parent / "m.onnx")
    r = CliRunner().invoke(main, ["eval", str(root.parent / "m.onnx"), "--data", str(root), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n"] == 30
    (root / "preprocess.json").write_text(json.dumps({"std": [1, 1, 1], "mean": [0, 0, 0], "resize": 0}))
    r = CliRunner().invoke(main, ["eval", str(root.parent / "m.onnx"), "--data", str(root)])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "\"resize\" must be a positive integer" in lines[0]
