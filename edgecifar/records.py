"""The JSON records that cross modules, typed: a manifest entry (`exported/manifest.json`), a bench row
(`bench.json`), a run's config.json and the model metadata it holds.

Each is a dataclass with `from_json(data)` (a decoded JSON object -> the record; a wrong type is one line of the
record's EdgecifarError) and `to_json()` (the record -> a JSON object, what the file holds). What a file holds
survives a read and a write unchanged, byte for byte once dumped as before: keys a file has that a record does
not know are kept in `extra` and written back, the file's key order is kept, and a field the file lacks (it
predates the field) takes its default and is not written back while it keeps it (while None). A record built by
code writes its fields in the order they are declared here, which is the order the writers used when these
were dicts. Stdlib only (the device side reads manifest entries and model metadata; no torch here).
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import ArtifactError, BenchError, CheckpointError, EdgecifarError

R = TypeVar("R", bound="Record")

_BOOK_KEEPING = ("extra", "_keys")


@dataclass(kw_only=True)
class Record:
    """Base of the records: the unknown keys of the file read (`extra`) and its key order (`_keys`)."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # keys this record does not know, kept
    _keys: tuple[str, ...] = field(default=(), repr=False, compare=False)  # the key order of the file read

    OPTIONAL: ClassVar[frozenset[str]] = frozenset()  # fields a record built by code leaves out while None
    ERROR: ClassVar[type[EdgecifarError]] = EdgecifarError  # what a malformed object raises
    WHAT: ClassVar[str] = "record"  # its name in messages

    @classmethod
    def from_json(cls: type[R], data: Any, where: str = "") -> R:
        """The record an object decoded from JSON holds. Raises cls.ERROR, one line naming `where` (a file, an
        entry) and the key, for something that is not an object, a missing required key or a value of the wrong
        JSON type (the first such problem); nested records are read the same way."""
        record, problems = cls._read(data, where or cls.WHAT)
        if record is None:
            raise cls.ERROR(problems[0])
        return record

    @classmethod
    def problems(cls, data: Any) -> list[str]:
        """What keeps `data` from being this record, one line each without a `where` (empty: it is one)."""
        return cls._read(data, "")[1]

    @classmethod
    def bad_keys(cls, data: dict[str, Any]) -> list[str]:
        """The keys of `data` (an object) that keep it from being this record: required ones it lacks, and
        those whose values have the wrong JSON type, in declared order."""
        hints = _hints(cls)
        return [
            f.name
            for f in _fields(cls)
            if (f.name in data and not _fits_deep(data[f.name], hints[f.name]))
            or (f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        ]

    @classmethod
    def _read(cls: type[R], data: Any, where: str) -> tuple[R | None, list[str]]:
        at = f"{where}: " if where else ""
        if not isinstance(data, dict):
            return None, [f"{at}must be a JSON object, found {kind(data)}"]
        hints = _hints(cls)
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in _fields(cls):
            if f.name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    problems.append(f"{at}'{f.name}' is missing")
                continue
            value, hint = data[f.name], hints[f.name]
            nested, many = _record_type(hint)
            if nested is not None and value is not None and (not many or isinstance(value, list)):
                items = (
                    [(f"{at}'{f.name}'[{i}]", v) for i, v in enumerate(value)] if many else [(f"{at}'{f.name}'", value)]
                )
                read = [nested._read(v, w) for w, v in items]
                problems += [p for _, found in read for p in found]
                values[f.name] = [r for r, _ in read] if many else read[0][0]
            elif not _fits(value, hint):
                problems.append(f"{at}'{f.name}' must be {_wanted(hint)}, found {kind(value)}")
            else:
                values[f.name] = value
        if problems:
            return None, problems
        known = {f.name for f in _fields(cls)}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra, _keys=tuple(data)), []

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this record (nested records as objects; values are this record's own, not
        copies): the file's keys in the file's order, then any field set since, then in declared order."""
        out: dict[str, Any] = {}
        for f in _fields(type(self)):
            value = getattr(self, f.name)
            if value is None and (f.name not in self._keys if self._keys else f.name in self.OPTIONAL):
                continue
            out[f.name] = _dumped(value)
        out.update(self.extra)
        if not self._keys:
            return out
        place = {k: i for i, k in enumerate(self._keys)}
        return {k: out[k] for k in sorted(out, key=lambda k: place.get(k, len(place)))}


def _dumped(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list) and value and isinstance(value[0], Record):
        return [v.to_json() for v in value]
    return value


def kind(value: Any) -> str:
    """A JSON value's type in words ("a string", "null", ...)."""
    names = {
        type(None): "null",
        str: "a string",
        list: "a list",
        dict: "an object",
        bool: "true/false",
        int: "a number",
        float: "a number",
    }
    return names.get(type(value), type(value).__name__)


def _fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.name not in _BOOK_KEEPING]


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _options(hint: Any) -> tuple[Any, ...]:
    return get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)


def _record_type(hint: Any) -> tuple[type[Record] | None, bool]:
    """The record type a field holds, and whether it holds a list of them."""
    for option in _options(hint):
        many = get_origin(option) is list
        inner = get_args(option)[0] if many and get_args(option) else option
        if isinstance(inner, type) and issubclass(inner, Record):
            return inner, many
    return None, False


def _fits_deep(value: Any, hint: Any) -> bool:
    """_fits, nested records included."""
    nested, many = _record_type(hint)
    if nested is None or value is None:
        return _fits(value, hint)
    values = value if many and isinstance(value, list) else [value]
    return (isinstance(value, list) or not many) and not any(nested._read(v, "")[1] for v in values)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the (outer) type a hint names; an int is a float, a bool is neither."""
    for option in _options(hint):
        option = get_origin(option) or option
        if option is Any or (option is type(None) and value is None):
            return True
        if option in (int, float) and isinstance(value, bool):
            continue
        if option is float and isinstance(value, (int, float)):
            return True
        if isinstance(option, type) and option is not type(None) and isinstance(value, option):
            return True
    return False


def _wanted(hint: Any) -> str:
    words = {str: "a string", int: "a whole number", float: "a number", bool: "true/false", list: "a list"}
    named = [words.get(get_origin(h) or h, "an object") for h in _options(hint) if h is not type(None)]
    return " or ".join(named) + (" or null" if type(None) in _options(hint) else "")


@dataclass(kw_only=True)
class ModelMeta(Record):
    """What a model is (config.json's "model"; an EdgeModel's `meta`): its architecture, classes, the
    normalization inside it and the input contract (edgecifar.contract). source_run and source_sha256 are set
    when a run is loaded (its folder's name, the weights' sha256), qat for a QAT run."""

    model: str  # the registered architecture
    num_classes: int
    classes: list[str]  # class names, in label order
    mean: list[float] | None = None  # per channel, on [0, 1] pixels
    std: list[float] | None = None
    img_size: int | None = None  # the square resolution the backbone sees (None: the input's own)
    input: dict[str, Any] | None = None  # contract.input_spec; None in runs from before input sizes existed
    output: dict[str, Any] | None = None  # {"name": "logits", "dtype": "float32", "shape": ["N", classes]}
    source_run: str | None = None
    source_sha256: str | None = None
    qat: dict[str, Any] | None = None  # a QAT run's {"int8_isa", "source_run", "epochs"}

    OPTIONAL = frozenset({"mean", "std", "input", "output", "source_run", "source_sha256", "qat"})
    ERROR = CheckpointError
    WHAT = "model metadata"


@dataclass(kw_only=True)
class RunConfig(Record):
    """A run folder's config.json: the model, the training options (TrainConfig's fields, as the run's version
    had them), the data it saw and where it ran. Runs of older versions lack the later sections."""

    model: ModelMeta
    train: dict[str, Any] | None = None  # dataclasses.asdict(TrainConfig) of the run's version
    data: dict[str, Any] | None = None  # Splits.describe()
    device: str | None = None
    distributed: dict[str, Any] | None = None
    params: int | None = None
    trainable_params: int | None = None
    autocast: dict[str, Any] | None = None
    versions: dict[str, str] | None = None
    resumed: list[dict[str, Any]] | None = None  # one per resume: the epoch and what changed
    qat: dict[str, Any] | None = None  # a QAT run's recipe and source (edgecifar.qat)
    rebuilt_from: dict[str, Any] | None = None  # a run folder rebuilt from an exported file

    OPTIONAL = frozenset({"qat", "rebuilt_from"})
    ERROR = CheckpointError
    WHAT = "config.json"


@dataclass(kw_only=True)
class ManifestEntry(Record):
    """One exported artifact in `exported/manifest.json` (edgecifar.manifest checks an entry's schema before it
    becomes one). path and files are relative to the manifest's folder; files maps each file of the artifact
    to its sha256 (old entries have only `sha256`, of the main file)."""

    model: str
    format: str  # a backend's name
    precision: str  # fp32 | fp16 | int8
    files: dict[str, str] | None = None
    bytes: int | None = None  # of all its files
    sha256: str | None = None  # of the main file
    classes: list[str]
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    source_run: str | None = None
    source_sha256: str | None = None  # the run's weights
    edgecifar_version: str | None = None
    versions: dict[str, str] | None = None
    verification: dict[str, Any] | None = None  # agreement with PyTorch on test images (export.verify_artifact)
    export_seconds: float | None = None
    edge_targets: dict[str, Any] | None = None  # the accelerators that take every op (edgecifar.edge_targets)
    exported_at: str | None = None  # ISO 8601, UTC
    accuracy_control: dict[str, Any] | None = None  # accuracy-controlled INT8's outcome
    path: str  # the main file
    calibration: dict[str, Any] | None = None  # INT8: the calibration draw
    size_vs_fp32: float | None = None  # bytes over the same format's FP32 file's
    regenerate: str | None = None  # the command that makes the file again (not committed)

    OPTIONAL = frozenset(
        {
            "files",
            "bytes",
            "sha256",
            "input",
            "output",
            "source_run",
            "source_sha256",
            "edgecifar_version",
            "versions",
            "verification",
            "export_seconds",
            "edge_targets",
            "exported_at",
            "accuracy_control",
            "calibration",
            "size_vs_fp32",
            "regenerate",
        }
    )
    ERROR = ArtifactError
    WHAT = "manifest entry"

    def file_hashes(self) -> dict[str, str]:
        """{relative path: sha256} of every file (old entries list only the main file)."""
        return dict(self.files or {self.path: self.sha256 or ""})


@dataclass(kw_only=True)
class BenchRow(Record):
    """One measured (or skipped, or failed) file at one thread setting: a row of bench.json. Accuracy, latency
    and memory are None where not measured (status "skipped" or "error", with the reason). Rows of older
    versions lack the later fields (accuracy_low/high, test_set, per_image, the trials, input_size, isa)."""

    model: str
    variant: str  # the runtime and precision as shown ("ONNX INT8", "PyTorch", ...)
    format: str | None = None  # "pytorch" or a backend's name
    precision: str | None = None
    exec_precision: str | None = None  # what the runtime computes in
    threads: int
    status: str | None = None  # ok | skipped | error (None in a hand-made row: counted as ok)
    reason: str | None = None  # why it was skipped or failed ("" when measured)
    # accuracy on the test set: top-1 with its Wilson 95 % interval, per class, and per image (stats)
    accuracy: float | None = None
    accuracy_low: float | None = None
    accuracy_high: float | None = None
    correct: int | None = None
    images: int | None = None
    test_set: str | None = None  # the test set's fingerprint (rows compare per image only on the same one)
    per_class: dict[str, float | None] | None = None
    per_image: dict[str, Any] | None = None  # stats.per_image_record
    size_bytes: int | None = None
    size_mb: float | None = None
    params: int | None = None
    macs: int | None = None
    # latency in ms: the median over trials of each percentile, the p50's min-max and every trial's p50/p99
    latency_p50_ms: float | None = None
    latency_p50_min_ms: float | None = None
    latency_p50_max_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_mean_ms: float | None = None
    latency_iterations: int | None = None
    latency_trials: int | None = None
    latency_trial_p50_ms: list[float] | None = None
    latency_trial_p99_ms: list[float] | None = None
    throughput_ips: float | None = None  # images per second
    throughput_source: str | None = None
    load_s: float | None = None
    import_s: float | None = None
    threads_runtime: int | None = None  # the threads the runtime really used
    # a microcontroller's figures (Backend.device_figures): flash and arena in bytes
    flash_bytes: int | None = None
    arena_bytes: int | None = None
    arena_detail: dict[str, Any] | None = None
    latency_note: str | None = None
    batch_size: int | None = None  # of the accuracy pass
    isa: dict[str, Any] | None = None  # the CPU's INT8 path (edgecifar.isa)
    isa_warning: str | None = None
    checksum: str | None = None  # the manifest check: ok | mismatch | unlisted | ...
    sha256: str | None = None
    path: str | None = None
    source_run: str | None = None
    data: str | None = None
    input_size: str | None = None  # "HxW"
    device: str | None = None
    cpu: str | None = None
    cores: int | None = None
    date: str | None = None  # ISO 8601, UTC
    versions: dict[str, str] | None = None

    OPTIONAL = frozenset({"flash_bytes", "arena_bytes", "arena_detail", "latency_note"})
    ERROR = BenchError
    WHAT = "bench row"

    def latency(self, percentile: str = "p50") -> float | None:
        """The batch-1 latency at "p50", "p90" or "p99" (ms)."""
        return getattr(self, f"latency_{percentile}_ms")

    def latency_trials_at(self, percentile: str = "p50") -> list[float] | None:
        """Every trial's latency at "p50" or "p99" (ms); None where the row keeps none."""
        return getattr(self, f"latency_trial_{percentile}_ms", None)


@dataclass(kw_only=True)
class Manifest(Record):
    """A manifest.json of edgecifar's (edgecifar.manifest): its marker, its schema version and its entries."""

    generator: Any = None  # "edgecifar" (manifest.GENERATOR); manifests written before the marker lack it
    version: Any = None  # manifest.VERSION
    artifacts: list[ManifestEntry]

    OPTIONAL = frozenset({"generator", "version"})
    ERROR = ArtifactError
    WHAT = "manifest"
