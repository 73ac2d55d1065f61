"""Image folders: layout, classes, the shared preprocessing, skipped files and symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.images import load_image as service_load_image
from training.classfolders import class_folder
from training.datasets import DATASETS
from training.imagefolder import ImageFolderError, load_image_folder, read_image_file, split_stratified
from training.images import load_image

UCI = Path(__file__).resolve().parents[1] / "data" / "uci-digits"


def png(path: Path, value: int = 0, size: tuple[int, int] = (20, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("L", size, 255)
    image.paste(value, (5, 4, 12, 16))  # a dark bar: a "1"
    image.save(path)
    return path


def test_the_same_bytes_give_the_same_array_in_training_and_serving():
    """No train/serve skew: a file read by train --images equals the upload the service decodes."""
    for path in sorted((UCI / "train").glob("*/*.png"))[::37]:
        data = path.read_bytes()
        trained, sha = read_image_file(path)  # type: ignore[misc]
        served = service_load_image(data, (28, 28), "mnist")
        np.testing.assert_array_equal(trained, served)
        np.testing.assert_array_equal(trained, load_image(data, (28, 28)))
        assert trained.shape == (28, 28) and trained.dtype == np.float32


def test_a_real_folder_loads_with_sorted_class_names_and_counts():
    folder = load_image_folder(UCI / "train")
    assert folder.class_names == tuple(str(d) for d in range(10))
    assert folder.counts() == {str(d): 30 for d in range(10)}
    assert folder.x.shape == (300, 784) and folder.x.dtype == np.float32
    assert folder.x.min() >= 0 and folder.x.max() <= 1
    assert folder.skipped == ()
    assert len(folder.files_sha256) == 64
    described = folder.describe()
    assert described["count"] == 300 and described["counts"]["7"] == 30


def test_the_file_list_hash_changes_with_a_file_and_not_with_workers(tmp_path):
    for c in "ab":
        for i in range(3):
            png(tmp_path / c / f"{i}.png", value=i * 10)
    one = load_image_folder(tmp_path, workers=0)
    two = load_image_folder(tmp_path, workers=2)
    assert one.files_sha256 == two.files_sha256
    np.testing.assert_array_equal(one.x, two.x)
    png(tmp_path / "a" / "0.png", value=90)
    assert load_image_folder(tmp_path).files_sha256 != one.files_sha256


def test_classes_follow_the_models_order_and_must_be_among_them(tmp_path):
    png(tmp_path / "7" / "a.png")
    png(tmp_path / "1" / "a.png")
    folder = load_image_folder(tmp_path, classes=[str(d) for d in range(10)])
    assert folder.class_names == tuple(str(d) for d in range(10))
    assert sorted(folder.t.tolist()) == [1, 7]
    png(tmp_path / "seven" / "a.png")
    with pytest.raises(ImageFolderError, match="'seven' is not one of the model's classes"):
        load_image_folder(tmp_path, classes=[str(d) for d in range(10)])


FASHION = DATASETS["fashion-mnist"].class_names


def test_folder_names_are_read_through_the_mapping_the_service_stores_with(tmp_path):
    """A class whose name is no path segment ("T-shirt/top") has the folder class_folder gives it,
    and the reader reads that folder back as the class, by name and from scratch alike."""
    for name in ("T-shirt/top", "Trouser"):
        png(tmp_path / class_folder(name) / "a.png", value=len(name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["T-shirt%2Ftop", "Trouser"]
    folder = load_image_folder(tmp_path, FASHION)
    assert folder.counts() == {"T-shirt/top": 1, "Trouser": 1}
    assert folder.t.tolist() == [0, 1]  # the model's order: T-shirt/top is class 0
    assert load_image_folder(tmp_path).class_names == ("T-shirt/top", "Trouser")


def test_two_folders_of_one_class_are_one_class(tmp_path):
    png(tmp_path / "7" / "a.png", value=10)
    png(tmp_path / "%37" / "b.png", value=20)  # "7", percent-encoded by hand
    png(tmp_path / "1" / "c.png", value=30)
    folder = load_image_folder(tmp_path)
    assert folder.class_names == ("1", "7")
    assert folder.counts() == {"1": 1, "7": 2}


def test_an_unknown_class_names_its_folder_and_how_names_are_encoded(tmp_path):
    png(tmp_path / "T-shirt" / "a.png")
    with pytest.raises(ImageFolderError) as info:
        load_image_folder(tmp_path, FASHION)
    message = str(info.value)
    assert f"{tmp_path}/T-shirt: 'T-shirt' is not one of the model's classes" in message
    assert "'T-shirt%2Ftop' is 'T-shirt/top'" in message


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: None, "no class folders"),
        (lambda root: (root / "a").mkdir(), "no images in its class folders"),
        (lambda root: png(root / "a" / "x.png").rename(root / "a" / "x.txt"), "no images in its class"),
    ],
    ids=["empty", "empty-class", "no-image-suffix"],
)
def test_folders_without_images_are_refused(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(ImageFolderError, match=message):
        load_image_folder(tmp_path)


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(ImageFolderError, match="does not exist"):
        load_image_folder(tmp_path / "nope")


def test_corrupt_oversized_and_bomb_files_are_skipped_by_path(tmp_path):
    png(tmp_path / "a" / "good.png")
    png(tmp_path / "b" / "good.png")
    (tmp_path / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    truncated = png(tmp_path / "b" / "truncated.png").read_bytes()
    (tmp_path / "b" / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    Image.new("1", (5000, 5000)).save(tmp_path / "a" / "huge.png")  # 25M pixels: over the limit
    folder = load_image_folder(tmp_path)
    assert folder.counts() == {"a": 1, "b": 1}
    skipped = "\n".join(folder.skipped)
    for name in ("a/corrupt.png", "b/truncated.png", "a/huge.png"):
        assert str(tmp_path / name) in skipped
    assert "5000x5000" in skipped


def test_symlinks_out_of_the_folder_are_not_followed(tmp_path):
    root = tmp_path / "root"
    outside = png(tmp_path / "elsewhere" / "secret.png")
    png(root / "a" / "in.png")
    png(root / "b" / "in.png")
    os.symlink(outside, root / "a" / "link.png")
    os.symlink(tmp_path / "elsewhere", root / "c")
    os.symlink(root / "b" / "in.png", root / "a" / "inside-link.png")  # inside: followed
    folder = load_image_folder(root)
    assert folder.class_names == ("a", "b")
    assert folder.counts() == {"a": 2, "b": 1}
    assert sum("symlink leading out" in line for line in folder.skipped) == 2


def test_stratified_split_is_seeded_and_keeps_every_class():
    t = np.repeat(np.arange(10), 30)
    keep, held = split_stratified(t, 0.1, np.random.default_rng(0))
    again = split_stratified(t, 0.1, np.random.default_rng(0))
    np.testing.assert_array_equal(held, again[1])
    assert np.bincount(t[held]).tolist() == [3] * 10
    assert np.bincount(t[keep]).tolist() == [27] * 10
    assert set(keep.tolist()) | set(held.tolist()) == set(range(300))
    assert split_stratified(np.array([0, 0, 1]), 0.5, np.random.default_rng(0))[1].size == 1
