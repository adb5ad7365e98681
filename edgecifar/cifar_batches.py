"""CIFAR-10's python batch files (`data_batch_1..5`, `test_batch`, `batches.meta`), read without running code.

The files are pickles. A pickle can name any Python callable, so an ordinary `pickle.load` of a file from
the internet runs whatever it names. This reader allows exactly what the real files hold: dicts, lists,
strings, numbers and numpy arrays (rebuilt through numpy's own reconstruction functions); a pickle that
names anything else is refused before anything is called. What comes out is then checked against the format:
"data" an integer array [N, 3072] in 0-255, "labels" N class indices, "label_names" a list of strings.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Callable

import numpy as np

from .errors import DataError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
IMAGE_BYTES = 3 * 32 * 32


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """What protocol-2 pickles of bytes call (`_codecs.encode(text, "latin1")`), limited to that codec."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}, which a CIFAR batch never uses")
    return text.encode("latin1")


def _numpy_builders() -> dict[str, Any]:
    """numpy's own pickle helpers, taken from what numpy itself pickles (their module moved in numpy 2)."""
    array = np.zeros(1, dtype=np.uint8)
    return {
        "_reconstruct": array.__reduce__()[0],
        "_frombuffer": array.__reduce_ex__(5)[0],
        "scalar": np.uint8(0).__reduce__()[0],
    }


_BUILDERS = _numpy_builders()
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    **{
        (module, "_reconstruct"): _BUILDERS["_reconstruct"]
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{(module, "scalar"): _BUILDERS["scalar"] for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _BUILDERS["_frombuffer"] for module in ("numpy.core.numeric", "numpy._core.numeric")},
}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that can build only plain values and numpy arrays: nothing in the file is ever called
    unless it is in _ALLOWED (no import happens either: the allowed objects are looked up, not imported)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it asks to call {module}.{name}, which a CIFAR batch never holds; nothing was run"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it holds a persistent reference, which a CIFAR batch never does")


def unpickle(data: bytes, name: str) -> dict[str, Any]:
    """Safely unpickle one CIFAR batch file's bytes into a dict (keys as str); DataError naming `name`."""
    try:
        # latin1: the files were written by Python 2; numpy needs it to rebuild their arrays
        obj = _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"refusing CIFAR batch file {name}: {e}") from None
    except Exception as e:  # noqa: BLE001 - truncated or garbled bytes fail in many ways
        raise DataError(f"corrupt CIFAR batch file {name}: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(obj, dict):
        raise DataError(f"corrupt CIFAR batch file {name}: it holds a {type(obj).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def read_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images uint8 [N, 32, 32, 3] (NHWC) and labels int64 [N]."""
    batch = unpickle(data, name)
    images = _integer_array(batch.get("data"), name, "data")
    labels = _integer_array(batch.get("labels", batch.get("fine_labels")), name, "labels")
    if images.ndim != 2 or images.shape[1] != IMAGE_BYTES or images.min(initial=0) < 0 or images.max(initial=0) > 255:
        raise DataError(
            f"corrupt CIFAR batch file {name}: 'data' must be [N, {IMAGE_BYTES}] values in 0-255, "
            f"got {images.dtype} {list(images.shape)}"
        )
    if labels.ndim != 1 or len(labels) != len(images) or labels.min(initial=0) < 0:
        raise DataError(
            f"corrupt CIFAR batch file {name}: {len(images)} images but labels of shape "
            f"{list(labels.shape)} (or negative)"
        )
    x = images.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), labels.astype(np.int64)


def _integer_array(value: Any, name: str, key: str) -> np.ndarray:
    if value is None:
        raise DataError(f"corrupt CIFAR batch file {name}: no '{key}' entry")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as e:
        raise DataError(f"corrupt CIFAR batch file {name}: '{key}' is not an array ({e})") from None
    if array.dtype.kind not in "iu":
        raise DataError(f"corrupt CIFAR batch file {name}: '{key}' holds {array.dtype}, not integers")
    return array


def read_label_names(data: bytes, name: str) -> list[str]:
    """`batches.meta` -> the class names, in label order."""
    names = unpickle(data, name).get("label_names")
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, (str, bytes)) for n in names):
        raise DataError(f"corrupt CIFAR batch file {name}: 'label_names' must be a list of strings")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def read_cifar(
    read: Callable[[str], bytes | None], name_of: Callable[[str], str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Every batch of one `cifar-10-batches-py` folder: `read(file_name)` gives a file's bytes (None when
    absent), `name_of(file_name)` what messages call it.

    Returns train images, train labels, test images, test labels (as read_batch) and the class names.
    """

    def load(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for file in names:
            data = read(file)
            if data is None:
                raise DataError(f"missing CIFAR batch file {name_of(file)}")
            parts.append(read_batch(data, name_of(file)))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    train_x, train_y = load(TRAIN_BATCHES)
    test_x, test_y = load((TEST_BATCH,))
    meta = read(META)
    classes = read_label_names(meta, name_of(META)) if meta is not None else [str(i) for i in range(10)]
    top = int(max(train_y.max(initial=0), test_y.max(initial=0)))
    if top >= len(classes):
        raise DataError(f"{name_of(META)}: names {len(classes)} classes, but the batches use label {top}")
    return train_x, train_y, test_x, test_y, classes
