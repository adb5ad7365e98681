"""Nothing a user supplies is deserialized in a way that runs code: CIFAR batch files (in a folder, in the
official archive, from torchvision's download), pretrained weights, and no unsafe loader anywhere in the code."""

from __future__ import annotations

import ast
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecifar.cli import app
from edgecifar.data import load_data
from edgecifar.errors import DataError, ModelError

from conftest import CLASSES, synthetic_images

PACKAGE = Path(__file__).resolve().parents[1] / "edgecifar"


class Payload:
    """Pickles as "call os.system('touch MARKER')": what a malicious download would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_copy(cifar_batches: Path, tmp_path: Path, file: str) -> tuple[Path, Path]:
    """A copy of the tiny CIFAR folder whose `file` would create MARKER when unpickled."""
    root = tmp_path / "evil"
    shutil.copytree(cifar_batches, root)
    marker = tmp_path / "MARKER"
    value = (
        {"label_names": Payload(marker)} if file == "batches.meta" else {"data": Payload(marker), "labels": [0, 1, 2]}
    )
    (root / "cifar-10-batches-py" / file).write_bytes(pickle.dumps(value, protocol=2))
    return root, marker


@pytest.mark.parametrize("file", ["data_batch_1", "test_batch", "batches.meta"])
def test_crafted_batch_file_is_refused_and_never_run(cifar_batches, tmp_path, file):
    root, marker = evil_copy(cifar_batches, tmp_path, file)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    for source in (root, root / "cifar-10-batches-py", archive):
        with pytest.raises(DataError, match=rf"refusing CIFAR batch file .*{file}.*(posix|os)\.system") as error:
            load_data(str(source), tmp_path / "cache")
        assert "\n" not in str(error.value)
    assert not marker.exists() and not (tmp_path / "cache" / "decoded").exists()
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(archive),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 2 and result.output.startswith("error: refusing CIFAR batch file")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not marker.exists() and not (tmp_path / "run").exists()
    pickle.loads((root / "cifar-10-batches-py" / file).read_bytes())  # the control: a plain unpickler runs it
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_genuine_batches_load_with_the_same_arrays(tmp_path, protocol):
    """Batches written the ways CIFAR's authors (Python 2, bytes keys) and numpy 1/2 write them."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    expected = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images, labels = synthetic_images(7, seed=i)
        expected[name] = images, labels
        data = images.transpose(0, 3, 1, 2).reshape(7, -1)
        keys = (b"data", b"labels", b"batch_label") if protocol == 2 else ("data", "labels", "batch_label")
        batch = dict(zip(keys, (data, labels.tolist(), f"batch {i}")))
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CLASSES, "num_vis": 3072}, protocol))
    splits = load_data(str(folder), tmp_path / "cache")
    train = [expected[f"data_batch_{k}"] for k in range(1, 6)]
    assert np.array_equal(splits.train_x, np.concatenate([x for x, _ in train]))
    assert np.array_equal(splits.train_y, np.concatenate([y for _, y in train]))
    assert np.array_equal(splits.test_x, expected["test_batch"][0]) and splits.classes == CLASSES
    assert splits.layout == "CIFAR-10 python batches"


@pytest.mark.parametrize(
    "batch, message",
    [
        ([1, 2, 3], "not a dict"),
        ({"labels": [0]}, "no 'data'"),
        ({"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]}, r"\[N, 3072\]"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "2 images but labels"),
        ({"data": np.full((1, 3072), 300, np.int32), "labels": [0]}, "0-255"),
        ({"data": np.zeros((1, 3072), np.float32), "labels": [0]}, "not integers"),
    ],
)
def test_malformed_batch_is_a_one_line_error(cifar_batches, tmp_path, batch, message):
    root = tmp_path / "bad"
    shutil.copytree(cifar_batches, root)
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=message):
        load_data(str(root), tmp_path / "cache")


def test_official_archive_reads_like_the_folder(cifar_batches, tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_batches / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_archive = load_data(str(archive), tmp_path / "cache")
    from_folder = load_data(str(cifar_batches), tmp_path / "cache")
    assert np.array_equal(from_archive.train_x, from_folder.train_x) and from_archive.classes == CLASSES
    assert np.array_equal(from_archive.test_y, from_folder.test_y)


def test_torchvision_download_goes_through_the_same_reader(cifar_batches, tmp_path, monkeypatch):
    """`--data cifar10`: torchvision only downloads (and checksums) the archive; our reader reads it."""
    import torchvision.datasets.utils

    root, marker = evil_copy(cifar_batches, tmp_path, "data_batch_3")
    good, evil = tmp_path / "good.tar.gz", tmp_path / "evil.tar.gz"
    for source, archive in ((cifar_batches, good), (root, evil)):
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    served = []

    def download_url(url, folder, filename, md5):
        assert filename == "cifar-10-python.tar.gz" and md5
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(served[-1], Path(folder) / filename)

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", download_url)
    served.append(good)
    splits = load_data("cifar10", tmp_path / "cache")
    assert splits.source == "cifar10" and splits.fingerprint == "torchvision-cifar10"
    assert splits.classes == CLASSES and len(splits.train_y) == 60
    served.append(evil)
    with pytest.raises(DataError, match="refusing CIFAR batch file"):
        load_data("cifar10", tmp_path / "cache2")
    assert not marker.exists()


def test_offline_download_names_data_option(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", offline)
    with pytest.raises(DataError, match="could not download CIFAR-10 .*--data"):
        load_data("cifar10", tmp_path / "cache")


def test_crafted_weights_file_is_refused_and_never_run(tmp_path):
    """`--weights FILE.pth` goes through timm's loader, which must unpickle with weights_only=True."""
    from edgecifar.models import create_model

    marker = tmp_path / "MARKER"
    weights = tmp_path / "evil.pth"
    import torch

    torch.save({"state_dict": Payload(marker)}, weights)
    with pytest.raises(ModelError, match="evil.pth"):
        create_model("resnet18", 3, weights=str(weights))
    assert not marker.exists()


def unsafe_calls(tree: ast.AST) -> list[str]:
    """Calls that can run code from a file: pickle/dill/marshal loads, torch.load without weights_only=True,
    numpy.load with allow_pickle=True, yaml.load / unsafe_load."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        name = node.func.attr
        keywords = {k.arg: k.value for k in node.keywords}
        flag = lambda key, value: isinstance(keywords.get(key), ast.Constant) and keywords[key].value is value  # noqa
        if owner in ("pickle", "dill", "marshal", "cloudpickle") and name in ("load", "loads"):
            found.append(f"{owner}.{name}")
        elif owner == "torch" and name == "load" and not flag("weights_only", True):
            found.append("torch.load without weights_only=True")
        elif (
            owner in ("np", "numpy")
            and name == "load"
            and not (flag("allow_pickle", False) or "allow_pickle" not in keywords)
        ):
            found.append("numpy.load with allow_pickle")
        elif owner == "yaml" and name in ("load", "unsafe_load", "full_load", "load_all"):
            found.append(f"yaml.{name}")
    return found


def test_no_unsafe_deserialization_in_the_code():
    offenders = {
        str(path.relative_to(PACKAGE)): calls
        for path in sorted(PACKAGE.rglob("*.py"))
        if (calls := unsafe_calls(ast.parse(path.read_text())))
    }
    assert offenders == {}
    assert unsafe_calls(
        ast.parse(
            "import torch, pickle, numpy as np\ntorch.load(f)\npickle.loads(b)\n"
            "np.load(f, allow_pickle=True)\ntorch.load(f, weights_only=True)"
        )
    ) == ["torch.load without weights_only=True", "pickle.loads", "numpy.load with allow_pickle"]
