"""The dataset-discovery rule (edgecifar.discovery), the same for a folder and for an archive of it, and the
summary every run prints and records."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import unicodedata

import numpy as np
import pytest

from edgecifar.data import load_data
from edgecifar.errors import DataError

from conftest import CLASSES, huge_png, small_tree, tar_of, write_images

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 100


def content(splits) -> dict:
    """What a source gives, without where it came from."""
    described = splits.describe()
    return {k: v for k, v in described.items() if k not in ("source", "fingerprint")}


def assert_same_data(a, b) -> None:
    assert content(a) == content(b)
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)


def test_hidden_appledouble_and_macosx_are_skipped_and_counted(tmp_path):
    tree = small_tree(tmp_path / "tree")
    (tree / ".DS_Store").write_bytes(b"\x00" * 64)
    (tree / "train" / ".DS_Store").write_bytes(b"\x00" * 64)
    (tree / "train" / "cat" / "._0-000.png").write_bytes(APPLEDOUBLE)
    write_images(tree / "train" / ".thumbnails", 3, 0)  # images in a hidden folder: never an extra class
    write_images(tree / "test" / "dog" / ".ipynb_checkpoints", 1, 1)
    (tree / "__MACOSX" / "train" / "cat").mkdir(parents=True)
    (tree / "__MACOSX" / "train" / "cat" / "._0-000.png").write_bytes(APPLEDOUBLE)
    clean = load_data(str(small_tree(tmp_path / "clean")), tmp_path / "cache")
    from_folder = load_data(str(tree), tmp_path / "cache")
    from_archive = load_data(str(tar_of(tree, tmp_path / "tree.tar.gz")), tmp_path / "cache")
    assert_same_data(from_folder, from_archive)
    assert from_folder.classes == CLASSES and np.array_equal(from_folder.train_x, clean.train_x)
    assert from_folder.describe()["skipped"] == {
        "hidden file or folder": 4,
        "macOS AppleDouble file (._*)": 1,
        "macOS __MACOSX folder": 1,
    }
    (warning,) = from_folder.warnings()
    assert warning.startswith("6 files/folders skipped: ") and "train/cat/._0-000.png" in warning


def test_image_extensions_in_any_case(tmp_path):
    tree = small_tree(tmp_path / "tree")
    extensions = ["JPG", "Jpeg", "jfif", "jpe", "tif", "TIFF", "webp", "PNG", "bmp", "ppm"]
    for i, ext in enumerate(extensions):
        write_images(tree / "train" / "ship", 1, 2, ext=ext, seed=i)
        (tree / "train" / "ship" / f"2-000.{ext}").rename(tree / "train" / "ship" / f"extra{i}.{ext}")
    (tree / "train" / "ship" / "notes.txt").write_text("not an image")
    (tree / "train" / "loose.png").write_bytes((tree / "train" / "ship" / "extra0.JPG").read_bytes())
    splits = load_data(str(tree), tmp_path / "cache")
    assert splits.counts()["train"] == [4, 4, 4 + len(extensions)]
    assert splits.describe()["skipped"] == {
        "not an image file name": 1,
        "file directly in train/ (not in a class folder)": 1,
    }


def test_symlinked_test_folder_and_class_folder_are_followed(tmp_path):
    shared = small_tree(tmp_path / "shared")
    exp1 = tmp_path / "exp1"
    shutil.copytree(shared / "train", exp1 / "train")
    (exp1 / "test").symlink_to(shared / "test")
    exp2 = tmp_path / "exp2"
    shutil.copytree(shared / "test", exp2 / "test")
    shutil.copytree(shared / "train" / "dog", exp2 / "train" / "dog")
    shutil.copytree(shared / "train" / "ship", exp2 / "train" / "ship")
    (exp2 / "train" / "cat").symlink_to(os.path.relpath(shared / "train" / "cat", exp2 / "train"))
    (exp2 / "train" / "dog" / "loop").symlink_to("..")  # a loop is skipped, not followed forever
    reference = load_data(str(shared), tmp_path / "cache")
    for folder in (exp1, exp2):
        splits = load_data(str(folder), tmp_path / "cache")
        assert splits.counts() == reference.counts() and np.array_equal(splits.test_x, reference.test_x)
    assert load_data(str(exp2), tmp_path / "cache").describe()["skipped"] == {"link loop": 1}


def test_a_folder_symlinked_into_an_image_pool_and_its_archive_agree(tmp_path):
    """Links inside the tree (as `ln -s` into a pool makes them) resolve the same in the folder and the tar."""
    root = tmp_path / "split"
    pool = small_tree(root / "pool")
    for name in CLASSES:
        (root / "train" / name).mkdir(parents=True)
        for image in sorted((pool / "train" / name).iterdir()):
            (root / "train" / name / image.name).symlink_to(os.path.relpath(image, root / "train" / name))
    (root / "test").symlink_to("pool/test")
    from_folder = load_data(str(root), tmp_path / "cache")
    from_archive = load_data(str(tar_of(root, tmp_path / "split.tar.gz")), tmp_path / "cache")
    assert from_folder.counts()["train"] == [4, 4, 4] and from_folder.counts()["test"] == [2, 2, 2]
    assert_same_data(from_folder, from_archive)


def add_member(
    tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = ""
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def test_archive_links_resolve_inside_the_archive_only(tmp_path):
    tree = small_tree(tmp_path / "tree")
    outside = tmp_path / "outside.png"
    outside.write_bytes((tree / "train" / "cat" / "0-000.png").read_bytes())
    archive = tmp_path / "links.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="data")
        image = (tree / "train" / "dog" / "1-000.png").read_bytes()
        add_member(tar, "data/train/dog/hard.png", tarfile.LNKTYPE, link="data/train/dog/1-000.png")
        add_member(tar, "data/train/dog/soft.png", tarfile.SYMTYPE, link="1-001.png")
        add_member(tar, "data/train/dog/chain.png", tarfile.SYMTYPE, link="soft.png")
        add_member(tar, "data/train/cat/abs.png", tarfile.SYMTYPE, link=str(outside))
        add_member(tar, "data/train/cat/up.png", tarfile.SYMTYPE, link="../../../../outside.png")
        add_member(tar, "data/train/cat/hard-up.png", tarfile.LNKTYPE, link="../outside.png")
        add_member(tar, "data/train/cat/gone.png", tarfile.SYMTYPE, link="missing.png")
        add_member(tar, "data/train/cat/loop.png", tarfile.SYMTYPE, link="loop.png")
        add_member(tar, "../escape/train/cat/x.png", data=image)
    splits = load_data(str(archive), tmp_path / "cache")
    assert splits.counts()["train"] == [4, 4 + 3, 4]
    assert splits.describe()["skipped"] == {
        "link pointing outside the archive": 3,
        "broken link": 1,
        "link loop": 1,
        "member path outside the archive": 1,
    }
    dog = splits.train_x[splits.train_y == 1]
    first, second = load_data(str(tree), tmp_path / "cache").train_x[4:6]  # dog's 1-000.png and 1-001.png
    # by name: 1-000 .. 1-003, then chain.png (-> soft.png -> 1-001.png), hard.png (-> 1-000.png), soft.png
    assert np.array_equal(dog[0], first) and np.array_equal(dog[1], second)
    assert np.array_equal(dog[4], second) and np.array_equal(dog[5], first) and np.array_equal(dog[6], second)


def test_links_leaving_the_archive_are_named_when_nothing_is_left(tmp_path):
    pool = small_tree(tmp_path / "pool")
    split = tmp_path / "split"
    shutil.copytree(pool / "test", split / "test")
    for name in CLASSES:
        (split / "train" / name).mkdir(parents=True)
        for image in (pool / "train" / name).iterdir():
            (split / "train" / name / image.name).symlink_to(os.path.relpath(image, split / "train" / name))
    assert load_data(str(split), tmp_path / "cache").counts()["train"] == [4, 4, 4]
    with pytest.raises(DataError, match=r"link pointing outside the archive: 12 .*--dereference"):
        load_data(str(tar_of(split, tmp_path / "split.tar.gz")), tmp_path / "cache")


def test_class_names_are_unicode_normalized(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    tree = tmp_path / "tree"
    write_images(tree / "train" / nfd, 3, 0)  # as macOS writes it
    write_images(tree / "test" / nfc, 2, 0)  # as most Linux tools write it
    small_tree(tree, {"dog": (3, 2)})
    splits = load_data(str(tree), tmp_path / "cache")
    assert splits.classes == ["café", "dog"] and splits.classes[0] == nfc
    assert splits.counts() == {"train": [3, 3], "test": [2, 2]}


def test_fewer_than_two_classes_is_refused(tmp_path):
    tree = small_tree(tmp_path / "one", {"cat": (5, 2)})
    with pytest.raises(DataError, match="at least two classes"):
        load_data(str(tree), tmp_path / "cache")


def test_summary_and_warnings(tmp_path):
    tree = small_tree(tmp_path / "tree", {"cat": (200, 2), "dog": (150, 0), "ship": (1, 1)})
    (tree / "train" / ".DS_Store").write_bytes(b"\x00")
    splits = load_data(str(tree), tmp_path / "cache")
    described = splits.describe()
    assert described["per_class"] == {
        "cat": {"train": 200, "test": 2},
        "dog": {"train": 150, "test": 0},
        "ship": {"train": 1, "test": 1},
    }
    assert described["train"] == 351 and described["test"] == 3 and described["layout"] == "ImageFolder"
    warnings = described["warnings"]
    assert len(warnings) == 3
    assert "1 files/folders skipped" in warnings[0] and "train/.DS_Store" in warnings[0]
    assert "no test images" in warnings[1] and "dog" in warnings[1]
    assert "under 1 %" in warnings[2] and "ship (1)" in warnings[2] and "cat" not in warnings[2]
    lines = splits.summary()
    assert lines[0].startswith(f"data: {tree} (ImageFolder), 3 classes") and "train 351" in lines[0]
    assert "  dog: train 150, test 0" in lines and sum(line.startswith("warning: ") for line in lines) == 3
    cached = load_data(str(tree), tmp_path / "cache")  # the skips survive the decoded cache
    assert cached.describe() == described


def test_stratified_validation_split(tmp_path):
    tree = small_tree(tmp_path / "tree", {"cat": (20, 2), "dog": (10, 2), "ship": (30, 2)})
    splits = load_data(str(tree), tmp_path / "cache", val_split=0.2, seed=4)
    assert splits.counts() == {"train": [16, 8, 24], "val": [4, 2, 6], "test": [2, 2, 2]}
    again = load_data(str(tree), tmp_path / "cache", val_split=0.2, seed=4)
    assert np.array_equal(splits.val_x, again.val_x)
    assert splits.describe()["per_class"]["dog"] == {"train": 8, "val": 2, "test": 2}


def test_too_small_validation_split_is_refused(tmp_path):
    tree = small_tree(tmp_path / "tree", {"cat": (20, 2), "dog": (3, 2)})
    with pytest.raises(
        DataError,
        match=r"--val-split 0.1 leaves class dog \(3 training images\) with no "
        r"validation image",
    ):
        load_data(str(tree), tmp_path / "cache", val_split=0.1)
    tiny = small_tree(tmp_path / "tiny", {"cat": (1, 1), "dog": (1, 1)})
    with pytest.raises(DataError, match="no training image"):
        load_data(str(tiny), tmp_path / "cache", val_split=0.5)


def test_several_datasets_in_one_source_are_refused(tmp_path):
    small_tree(tmp_path / "both" / "a")
    small_tree(tmp_path / "both" / "b")
    with pytest.raises(DataError, match=r"several datasets \(a/, b/\)"):
        load_data(str(tmp_path / "both"), tmp_path / "cache")


def test_train_prints_and_records_the_summary(tmp_path):
    from edgecifar.train import TrainConfig, train

    tree = small_tree(tmp_path / "tree")
    write_images(tree / "train" / ".thumbnails", 2, 0)
    printed: list[str] = []
    run = train(
        TrainConfig(
            model="scratch_cnn",
            data=str(tree),
            cache_dir=str(tmp_path / "cache"),
            epochs=1,
            batch_size=8,
            out=str(tmp_path / "run"),
        ),
        log=printed.append,
    )
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["classes"] == CLASSES and data["train"] == 12
    assert data["skipped"] == {"hidden file or folder": 1}
    assert data["per_class"]["cat"] == {"train": 4, "test": 2}
    assert (
        printed[0].startswith("data: ")
        and "warning: 1 files/folders skipped: hidden file or folder: 1 (train/.thumbnails)" in printed
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tree: small_tree(tree, {"cat": (6, 2)}), "only one class"),
        (lambda tree: huge_png(small_tree(tree) / "train" / "cat" / "panorama.png"), "panorama.png"),
    ],
)
def test_train_refuses_bad_data_with_one_line(tmp_path, make, message):
    from typer.testing import CliRunner

    from edgecifar.cli import app

    make(tmp_path / "tree")
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "tree"),
            "--epochs",
            "1",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_archive_links_that_multiply_are_refused(tmp_path):
    """Folder links that double at every level (2**30 paths from 60 members) stop early, with one line."""
    archive = tmp_path / "laughs.tar"
    with tarfile.open(archive, "w") as tar:
        add_member(tar, "data/train/cat/d0/x.png", data=b"x")
        for level in range(1, 31):
            for copy in "ab":
                add_member(tar, f"data/train/cat/d{level}/{copy}", tarfile.SYMTYPE, link=f"../d{level - 1}")
    with pytest.raises(DataError, match="links expand to more than"):
        load_data(str(archive), tmp_path / "cache")


def test_a_closed_output_does_not_stop_the_run(tmp_path):
    """`edgecifar train ... | head -2`: the summary lines come first, and the run goes on when head exits."""
    from edgecifar.train import TrainConfig, train

    printed: list[str] = []

    def head_2(line: str) -> None:
        if len(printed) == 2:
            raise BrokenPipeError(32, "Broken pipe")
        printed.append(line)

    run = train(
        TrainConfig(
            model="scratch_cnn",
            data=str(small_tree(tmp_path / "tree")),
            epochs=1,
            batch_size=8,
            cache_dir=str(tmp_path / "cache"),
            out=str(tmp_path / "run"),
        ),
        log=head_2,
    )
    assert printed[0].startswith("data: ") and (run / "config.json").is_file() and (run / "metrics.json").is_file()
