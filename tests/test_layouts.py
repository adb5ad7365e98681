"""The split-folder rule (edgecifar.discovery.SPLIT_NAMES): the train/ + val/ trees of Ultralytics, Kaggle and
Roboflow, Roboflow's train/ + valid/ + test/, and refusals that say what was found; image formats that cannot be
decoded here are named, not called "not an image"."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from edgecifar.data import load_data
from edgecifar.errors import DataError

from conftest import CLASSES, small_tree, tar_of


@pytest.fixture
def base(tmp_path):
    return small_tree(tmp_path / "base")


def tree_of(root, base, **splits):
    """root/<folder>/ copied from base/<split>/ for each folder=split given."""
    for folder, split in splits.items():
        shutil.copytree(base / split, root / folder)
    return root


@pytest.mark.parametrize("name", ["val", "valid", "validation", "VAL"])
def test_a_validation_folder_without_test_is_the_test_split(tmp_path, base, name):
    tree = tree_of(tmp_path / "t", base, train="train", **{name: "test"})
    splits = load_data(str(tree), tmp_path / "cache")
    reference = load_data(str(base), tmp_path / "cache")
    assert np.array_equal(splits.test_x, reference.test_x) and splits.val_y is None
    assert splits.layout == f"ImageFolder; train/, {name}/ as test"
    assert f"(ImageFolder; train/, {name}/ as test)" in splits.summary()[0]
    archived = load_data(str(tar_of(tree, tmp_path / "t.tar.gz")), tmp_path / "cache")  # same rule in an archive
    assert archived.layout == splits.layout and np.array_equal(archived.test_x, splits.test_x)


def test_a_validation_folder_beside_test_is_the_validation_split(tmp_path, base):
    tree = tree_of(tmp_path / "t", base, train="train", valid="test", test="test")
    (tree / "test" / "cat" / "0-000.png").unlink()  # the two differ: each is read from its own folder
    splits = load_data(str(tree), tmp_path / "cache")
    assert splits.counts() == {"train": [4, 4, 4], "val": [2, 2, 2], "test": [1, 2, 2]}
    assert splits.layout == "ImageFolder; train/, valid/ as validation, test/"
    cached = load_data(str(tree), tmp_path / "cache")  # the validation split survives the decoded cache
    assert np.array_equal(cached.val_x, splits.val_x) and cached.describe() == splits.describe()
    with pytest.raises(DataError, match=r"own validation split \(6 images.*leave --val-split out"):
        load_data(str(tree), tmp_path / "cache", val_split=0.5)


def test_two_folders_of_one_split_are_refused_by_name(tmp_path, base):
    tree = tree_of(tmp_path / "t", base, train="train", val="test", valid="test")
    with pytest.raises(DataError, match=r"val/ \(6 images\), valid/ \(6 images\) are 2 folders of the validation"):
        load_data(str(tree), tmp_path / "cache")


def test_no_test_split_names_what_was_there(tmp_path, base):
    tree = tree_of(tmp_path / "t", base, train="train", holdout="test")
    (tree / "labels.csv").write_text("id,label\n")
    with pytest.raises(DataError) as error:
        load_data(str(tree), tmp_path / "cache")
    message = str(error.value)
    assert "no images under test/<class>/ (nor testing/, val/, valid/, validation/)" in message
    assert "train/ (12 images in 3 class folders)" in message and "holdout/ (6 files)" in message
    assert "labels.csv" in message and "\n" not in message


def test_images_directly_in_train_are_counted_in_the_refusal(tmp_path, base):
    tree = tmp_path / "kaggle"
    for split in ("train", "test"):
        (tree / split).mkdir(parents=True)
        for i, f in enumerate(sorted((base / split).rglob("*.png"))):
            shutil.copy(f, tree / split / f"{i}.png")
    (tree / "train.csv").write_text("id,label\n0.png,cat\n")
    with pytest.raises(DataError, match=r"12 images directly in train/, .*outside any class folder.*CSV"):
        load_data(str(tree), tmp_path / "cache")


def test_a_split_folder_given_as_data_points_at_its_parent(tmp_path, base):
    with pytest.raises(
        DataError,
        match=rf"looks like one split itself .*cat/, dog/, ship/.*pass the folder above "
        rf"it, {tmp_path / 'base'}, as --data",
    ):
        load_data(str(base / "train"), tmp_path / "cache")
    shutil.copytree(base / "train", tmp_path / "classes")
    with pytest.raises(DataError, match=r"its folders cat/, dog/, ship/ hold images, but are not inside train/"):
        load_data(str(tmp_path / "classes"), tmp_path / "cache")


def test_images_in_a_folder_beside_the_splits_are_counted(tmp_path, base):
    tree = tree_of(tmp_path / "t", base, train="train", test="test", extra="test")
    splits = load_data(str(tree), tmp_path / "cache")
    assert splits.describe()["skipped"] == {"images in extra/, beside the split folders (not a split name)": 6}
    assert splits.counts()["test"] == [2, 2, 2]


@pytest.fixture
def without_pillow_heif(monkeypatch):
    """This process as if pillow-heif were not installed (its import fails, as it would)."""
    from edgecifar import images

    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    images.readable_formats.cache_clear()
    yield
    images.readable_formats.cache_clear()


def _as_heic(folder, real: bool) -> None:
    from PIL import Image

    for f in sorted(folder.glob("*.png")):
        if real:
            from pillow_heif import register_heif_opener

            register_heif_opener()
            Image.open(f).save(f.with_suffix(".HEIC"), format="HEIF", quality=95)
            f.unlink()
        else:
            f.rename(f.with_suffix(".HEIC"))


def test_a_class_of_heic_photos_is_named_with_how_to_read_it(tmp_path, base, without_pillow_heif):
    _as_heic(base / "train" / "dog", real=False)
    with pytest.raises(DataError) as error:
        load_data(str(base), tmp_path / "cache")
    message = str(error.value)
    assert "test/ has classes missing from train/: dog (train/ holds only files that cannot be used" in message
    assert "4 HEIC/HEIF image (not readable here: `pip install pillow-heif`" in message and "\n" not in message


def test_some_heic_photos_are_skipped_by_their_format(tmp_path, base, without_pillow_heif):
    (base / "train" / "dog" / "1-000.png").rename(base / "train" / "dog" / "IMG_0001.heic")
    splits = load_data(str(base), tmp_path / "cache")
    assert splits.counts()["train"] == [4, 3, 4]
    (reason,) = splits.describe()["skipped"]
    assert reason.startswith("HEIC/HEIF image (not readable here") and "not an image file name" not in reason


def test_heic_photos_are_trained_on_with_pillow_heif(tmp_path, base):
    pytest.importorskip("pillow_heif")
    _as_heic(base / "train" / "dog", real=True)
    splits = load_data(str(base), tmp_path / "cache")
    assert splits.classes == CLASSES and splits.counts()["train"] == [4, 4, 4] and not splits.skipped


def test_installing_pillow_heif_makes_a_new_decoded_cache(tmp_path, base, monkeypatch):
    pytest.importorskip("pillow_heif")
    from edgecifar import images

    _as_heic(base / "train" / "dog", real=True)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    images.readable_formats.cache_clear()
    with pytest.raises(DataError, match="HEIC"):
        load_data(str(base), tmp_path / "cache")  # refused: nothing cached
    (base / "test" / "dog").rename(base / "dog-test")  # now trainable without dog: cached without it
    assert load_data(str(base), tmp_path / "cache").classes == ["cat", "ship"]
    monkeypatch.delitem(sys.modules, "pillow_heif")
    images.readable_formats.cache_clear()
    assert load_data(str(base), tmp_path / "cache").classes == CLASSES  # pillow-heif installed: read again
