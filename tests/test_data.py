import gzip
import shutil
import time

import numpy as np
import pytest
import torch

from edgecifar.augment import cutout, random_crop_flip
from edgecifar.data import load_data
from edgecifar.errors import DataError

from conftest import CLASSES


def check_splits(splits, n_train, n_test):
    assert splits.train_x.shape == (n_train, 32, 32, 3) and splits.train_x.dtype == np.uint8
    assert splits.test_x.shape == (n_test, 32, 32, 3) and splits.test_x.dtype == np.uint8
    assert splits.classes == CLASSES
    assert set(splits.train_y.tolist()) == {0, 1, 2}
    # the synthetic images are bright in the channel of their class: labels follow pixels
    assert (splits.train_x.reshape(n_train, -1, 3).mean(1).argmax(1) == splits.train_y).all()


def test_image_folder(image_tree, cache_dir):
    check_splits(load_data(str(image_tree), cache_dir), 60, 30)


def test_archive_matches_folder(image_tree, image_archive, cache_dir):
    from_tree = load_data(str(image_tree), cache_dir)
    from_tar = load_data(str(image_archive), cache_dir)
    check_splits(from_tar, 60, 30)
    assert np.array_equal(from_tree.train_x, from_tar.train_x)
    assert np.array_equal(from_tree.test_y, from_tar.test_y)


def test_cifar_batches(cifar_batches, cache_dir):
    for path in (cifar_batches, cifar_batches / "cifar-10-batches-py"):
        splits = load_data(str(path), cache_dir)
        check_splits(splits, 60, 15)


def test_decoded_once_then_cached(image_archive, cache_dir, monkeypatch):
    first = load_data(str(image_archive), cache_dir)
    cached = list((cache_dir / "decoded").glob("*.npz"))
    assert len(cached) == 1
    import edgecifar.data as data_module

    monkeypatch.setattr(data_module, "_decode", lambda path: pytest.fail("decoded again instead of cache"))
    second = load_data(str(image_archive), cache_dir)
    assert np.array_equal(first.train_x, second.train_x) and second.classes == first.classes


def test_cache_key_follows_source_changes(image_tree, tmp_path, cache_dir):
    tree = tmp_path / "tree"
    shutil.copytree(image_tree, tree)
    before = load_data(str(tree), cache_dir)
    victim = next((tree / "train" / "cat").glob("*.png"))
    victim.unlink()
    time.sleep(0.01)
    after = load_data(str(tree), cache_dir)
    assert len(after.train_y) == len(before.train_y) - 1


def test_validation_split(image_tree, cache_dir):
    splits = load_data(str(image_tree), cache_dir, val_split=0.25, seed=1)
    assert len(splits.val_y) == 15 and len(splits.train_y) == 45
    again = load_data(str(image_tree), cache_dir, val_split=0.25, seed=1)
    assert np.array_equal(splits.val_x, again.val_x)


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda tmp: tmp / "nope", "not found"),
        (lambda tmp: _write(tmp / "empty" / ".keep", b"").parent, "no images"),
        (lambda tmp: _write(tmp / "only" / "train" / "a" / "1.png", b"").parents[2], "no images"),
        (lambda tmp: _write(tmp / "x.tar.gz", gzip.compress(b"not a tar")), "corrupt"),
        (lambda tmp: _write(tmp / "y.tar.gz", b"\x00garbage"), "corrupt"),
        (lambda tmp: _write(tmp / "plain.txt", b"hi"), "not a .tar.gz"),
    ],
)
def test_bad_sources(tmp_path, cache_dir, make_bad, message):
    with pytest.raises(DataError, match=message):
        load_data(str(make_bad(tmp_path)), cache_dir)


def test_corrupt_image_is_named(image_tree, tmp_path, cache_dir):
    tree = tmp_path / "tree"
    shutil.copytree(image_tree, tree)
    (tree / "test" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        load_data(str(tree), cache_dir)
    assert not (cache_dir / "decoded").exists() or not list((cache_dir / "decoded").glob("*.npz"))


def test_crop_flip_is_a_translation_or_mirror():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (64, 32, 32, 3), dtype=torch.uint8)
    out = random_crop_flip(images, 4, gen)
    assert out.shape == images.shape and out.dtype == torch.uint8
    # every output is the input shifted by at most 4 px (maybe mirrored): its centre 24x24 appears in the input
    for src, dst in zip(images[:8], out[:8]):
        centre = dst[4:28, 4:28]
        found = any(
            torch.equal(cand[dy : dy + 24, dx : dx + 24], centre)
            for cand in (src, src.flip(1))
            for dy in range(9)
            for dx in range(9)
        )
        assert found
    flips = random_crop_flip(images, 0, torch.Generator().manual_seed(1))
    mirrored = [torch.equal(f, i.flip(1)) for f, i in zip(flips, images)]
    assert 10 < sum(mirrored) < 54  # about half are mirrored, the rest unchanged
    assert all(m or torch.equal(f, i) for m, f, i in zip(mirrored, flips, images))


def test_random_flip_reports_which_images_it_mirrored():
    from edgecifar.augment import random_flip

    images = torch.randint(0, 255, (32, 32, 32, 3), dtype=torch.uint8)
    out, flipped = random_flip(images, torch.Generator().manual_seed(2))
    assert flipped.dtype == torch.bool and 0 < int(flipped.sum()) < 32
    for o, i, f in zip(out, images, flipped):
        assert torch.equal(o, i.flip(1) if f else i)


def test_augmentation_is_seeded():
    images = torch.randint(0, 255, (16, 32, 32, 3), dtype=torch.uint8)
    a = random_crop_flip(images, 4, torch.Generator().manual_seed(3))
    b = random_crop_flip(images, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_cutout_masks_one_square():
    images = torch.full((8, 32, 32, 3), 7, dtype=torch.uint8)
    out = cutout(images, 8, torch.Generator().manual_seed(0))
    masked = (out == 128).all(-1).sum(dim=(1, 2))
    assert ((masked > 0) & (masked <= 81)).all()


def test_cache_key_follows_the_decoder_version(image_archive, cache_dir, monkeypatch):
    """Decoded caches made under other decoding or discovery rules are never reused."""
    import edgecifar.data as data_module

    load_data(str(image_archive), cache_dir)
    decoded = []
    real_decode = data_module._decode
    monkeypatch.setattr(data_module, "_decode", lambda tree, *size: decoded.append(tree) or real_decode(tree, *size))
    load_data(str(image_archive), cache_dir)
    assert decoded == []
    monkeypatch.setattr(data_module, "CACHE_VERSION", "next")
    load_data(str(image_archive), cache_dir)
    assert len(decoded) == 1 and len(list((cache_dir / "decoded").glob("*.npz"))) == 2
