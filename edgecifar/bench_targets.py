"""What `edgecifar bench` measures: artifacts from manifests (or named files), each checked against its
manifest's sha256, plus the PyTorch model of each source run as the baseline, plus the test set each is
counted on. Problems that concern one artifact (missing file, checksum mismatch, runtime not installed)
mark that target skipped, with the reason; what cannot become a row (a manifest entry that breaks the schema,
a file the manifest does not list, an artifact not in this checkout) is a note; problems with the request
itself raise."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .backends import BACKENDS, check_threads, git_lfs_pointer, unavailable
from .contract import DEFAULT_SIZE, Size, size_of, size_text
from .errors import ArtifactError, DataError, EdgecifarError, UsageError
from .isa import cpu_has_bf16
from .manifest import MANIFEST, entry_files, find_manifest, listed_paths, read_entries
from .records import RunConfig
from .runs import CONFIG, WEIGHTS
from .utils import data_source, read_json, sha256_file

FORMAT_NAMES = {"pytorch": "PyTorch", **{name: b.label for name, b in BACKENDS.items()}}
ARTIFACT_SUFFIXES = {b.suffixes[0]: name for name, b in BACKENDS.items()}
MODEL_FILES = ", ".join(ARTIFACT_SUFFIXES)
PRECISION_ORDER = ("fp32", "fp16", "int8")


@dataclass
class Target:
    """One thing to measure (at every thread setting)."""

    model: str
    source_run: str
    format: str  # pytorch or a backend's name
    precision: str  # fp32 | fp16 | int8 (of the file)
    path: Path
    classes: list[str]
    exec_precision: str | None = None  # a runtime's inference precision hint for a variant row (bf16)
    isa_cap: str | None = None  # a narrower INT8 path this row runs on (edgecifar.isa.CAPS), None: the CPU's own
    run_dir: Path | None = None  # the source run folder, when found
    files: dict[str, str] = field(default_factory=dict)  # file -> sha256 the manifest expects
    source_sha256: str | None = None  # the run weights the artifact was exported from
    bytes: int | None = None
    sha256: str | None = None
    checksum: str = "n/a"  # ok | mismatch | missing | n/a
    status: str = "ok"  # ok | skipped
    reason: str = ""
    data: str | None = None  # the test set: a load_data source
    cache_dir: str | None = None
    input_size: Size = DEFAULT_SIZE  # (H, W) the file takes (the manifest's `input`): the test set's size

    @property
    def test_set(self) -> str:
        """Which decoded test set the target is measured on: its data at its input size."""
        return f"{self.data} at {size_text(self.input_size)}"

    @property
    def variant(self) -> str:
        name = FORMAT_NAMES.get(self.format, self.format)
        if self.format == "pytorch":
            return name
        return (
            f"{name} {self.precision.upper()}"
            + (f" {self.exec_precision}" if self.exec_precision else "")
            + (f" @{self.isa_cap}" if self.isa_cap else "")
        )

    def skip(self, reason: str) -> None:
        if self.status == "ok":  # the first reason is the one that matters
            self.status, self.reason = "skipped", reason


def resolve_targets(
    paths: Sequence[Path | str],
    runs_dir: Path | str | None,
    baseline: bool = True,
    bf16: bool = False,
    data: str | None = None,
    cache_dir: Path | str | None = None,
) -> tuple[list[Target], list[str]]:
    """Artifacts (manifest order) and their baselines, checked, and notes on what was left out (one line
    each); raises when the request names nothing usable."""
    artifacts: list[Target] = []
    notes: list[str] = []
    seen: set[Path] = set()
    for p in paths:
        for target in _from_path(Path(p), notes):
            if target.path.resolve() not in seen:
                seen.add(target.path.resolve())
                artifacts.append(target)
    if bf16:
        artifacts += _bf16_variants(artifacts)
    for target in artifacts:
        _check_files(target)
        _check_runtime(target)
    runs = Path(runs_dir) if runs_dir else None
    baselines = _baselines(artifacts, runs) if baseline else []
    targets = _interleave(baselines, artifacts)
    for target in targets:
        _attach_run_and_data(target, runs, data, cache_dir)
    return targets, list(dict.fromkeys(notes))


def _from_path(path: Path, notes: list[str]) -> list[Target]:
    if path.is_dir():
        manifest = path / MANIFEST
        if not manifest.is_file():
            raise ArtifactError(
                f"no {MANIFEST} in {path}: export a run first (`edgecifar export RUN_DIR --out {path}`)"
            )
        targets = _from_manifest(manifest, notes)
        notes += [f"not benched: {f} is not listed in {manifest}" for f in _unlisted(manifest)]
        return targets
    if not path.exists():
        raise ArtifactError(
            f"not found: {path} (give an exported folder, its {MANIFEST}, or a model file: {MODEL_FILES})"
        )
    if path.name.endswith(".json"):
        return _from_manifest(path)
    if path.suffix.lower() not in ARTIFACT_SUFFIXES:
        raise ArtifactError(f"{path}: not a model file ({MODEL_FILES}) nor a manifest")
    manifest = find_manifest(path)
    if manifest is None:
        raise ArtifactError(
            f"{path} has no {MANIFEST} beside it or above it: bench takes exported artifacts, "
            f"whose checksums and source run the manifest records"
        )
    rel = path.resolve().relative_to(manifest.parent.resolve()).as_posix()
    mine: list[str] = []
    found = [t for t in _from_manifest(manifest, mine, allow_empty=True) if t.path.resolve() == path.resolve()]
    if not found:
        why = next((n for n in mine if f"({rel})" in n), None)  # listed, but its entry is invalid
        raise ArtifactError(why or f"{path} is not listed in {manifest} (as {rel})")
    return found


def _from_manifest(manifest: Path, notes: list[str], allow_empty: bool = False) -> list[Target]:
    """A target per valid entry whose files are here; each invalid entry, and each artifact left out of this
    checkout (an entry with a `regenerate` command), is a note."""
    entries, problems = read_entries(manifest)  # an unreadable manifest raises ArtifactError
    notes += [f"{manifest}: {p}" for p in problems]
    if not entries and not problems and not allow_empty:
        raise ArtifactError(f"{manifest} lists no artifacts: export a run first")
    targets = []
    for e in entries:
        files = {str(manifest.parent / k): v for k, v in entry_files(e).items()}
        if e.regenerate is not None and not all(Path(f).is_file() for f in files):
            notes.append(f"not benched: {e.path} is not in this checkout (size budget); `{e.regenerate}` makes it")
            continue
        targets.append(
            Target(
                model=e.model,
                source_run=str(e.source_run or "?"),
                format=e.format,
                precision=e.precision,
                path=manifest.parent / e.path,
                classes=list(e.classes),
                files=files,
                source_sha256=e.source_sha256,
                input_size=size_of(e.input),
            )
        )
    return targets


def _unlisted(manifest: Path) -> list[str]:
    """Model files under the manifest's folder that no entry lists (hidden folders, such as an interrupted
    export's staging, left out)."""
    listed, root = listed_paths(manifest), manifest.parent
    found = (
        f.relative_to(root).as_posix() for f in root.rglob("*") if f.suffix.lower() in ARTIFACT_SUFFIXES and f.is_file()
    )
    return sorted(rel for rel in found if rel not in listed and not any(p.startswith(".") for p in rel.split("/")))


def _bf16_variants(artifacts: list[Target]) -> list[Target]:
    from dataclasses import replace

    variants = [
        replace(t, exec_precision="bf16")
        for t in artifacts
        if "bf16" in BACKENDS[t.format].exec_hints and t.precision == "fp32"
    ]
    if variants and not cpu_has_bf16():
        for v in variants:
            v.skip("this CPU has no bf16 instructions (avx512_bf16 / amx_bf16)")
    return variants


def _check_files(target: Target) -> None:
    """Every file of the artifact present and equal to the manifest's sha256, or the target is skipped."""
    total, statuses = 0, []
    for name, expected in target.files.items():
        file = Path(name)
        if not file.is_file():
            target.checksum = "missing"
            target.skip(f"listed in the manifest but missing: {file}")
            return
        if git_lfs_pointer(file):
            target.checksum = "mismatch"
            target.skip(f"{file} is a Git LFS pointer, not the file: fetch it with `git lfs pull`")
            return
        actual = sha256_file(file)
        total += file.stat().st_size
        if actual != expected:
            statuses.append(f"{file.name} has sha256 {actual[:12]}..., the manifest {str(expected)[:12]}...")
    target.bytes = total
    target.sha256 = sha256_file(target.path) if target.path.is_file() else None
    target.checksum = "mismatch" if statuses else "ok"
    if statuses:
        target.skip("checksum mismatch: " + "; ".join(statuses))


def _check_runtime(target: Target) -> None:
    if target.format == "pytorch":
        why = None if importlib.util.find_spec("torch") else "not installed: torch (pip install torch)"
    else:
        why = unavailable(BACKENDS[target.format])
    if why:
        target.skip(f"runtime {why}")


def _baselines(artifacts: list[Target], runs: Path | None) -> list[Target]:
    """The PyTorch model of each source run, checked against the weights its artifacts were exported from."""
    found = []
    for run_name in dict.fromkeys(t.source_run for t in artifacts):
        first = next(t for t in artifacts if t.source_run == run_name)
        run_dir = runs / run_name if runs else None
        weights = run_dir / WEIGHTS if run_dir else Path(run_name) / WEIGHTS
        target = Target(
            model=first.model,
            source_run=run_name,
            format="pytorch",
            precision="fp32",
            path=weights,
            classes=first.classes,
            run_dir=run_dir,
            input_size=first.input_size,
        )
        if not weights.is_file():
            target.skip(
                f"no run folder {run_dir or run_name} with model.safetensors for the PyTorch baseline (pass --runs DIR)"
            )
        else:
            target.bytes, target.sha256 = weights.stat().st_size, sha256_file(weights)
            exported_from = {t.source_sha256 for t in artifacts if t.source_run == run_name and t.source_sha256}
            target.checksum = "ok" if not exported_from or exported_from == {target.sha256} else "mismatch"
            if target.checksum == "mismatch":
                target.skip(f"checksum mismatch: {weights} is not the weights its artifacts were exported from")
            _check_runtime(target)
        found.append(target)
    return found


def _interleave(baselines: list[Target], artifacts: list[Target]) -> list[Target]:
    """Each run's baseline first, then its artifacts by format and precision: the order reports read in."""

    def rank(t: Target) -> tuple:
        return (
            list(FORMAT_NAMES).index(t.format) if t.format in FORMAT_NAMES else 9,
            PRECISION_ORDER.index(t.precision) if t.precision in PRECISION_ORDER else 9,
            t.exec_precision or "",
        )

    ordered = []
    for base in baselines:
        ordered.append(base)
        ordered += sorted((t for t in artifacts if t.source_run == base.source_run), key=rank)
    return ordered + sorted((t for t in artifacts if t not in ordered), key=lambda t: (t.source_run, rank(t)))


def _attach_run_and_data(target: Target, runs: Path | None, data: str | None, cache_dir) -> None:
    """Which test set counts this target: --data, else the one its source run was trained on."""
    config: RunConfig | None = None
    run_dir = runs / target.source_run if runs else None
    if run_dir is not None and (run_dir / CONFIG).is_file():
        target.run_dir = run_dir
        try:
            config = RunConfig.from_json(read_json(run_dir / CONFIG))
        except (OSError, ValueError, EdgecifarError):  # unreadable, or another tool's config.json
            config = None
    target.data = data or ((config.data or {}).get("source") if config else None)
    target.cache_dir = str(cache_dir) if cache_dir else ((config.train or {}).get("cache_dir") if config else None)
    if target.data and not data:
        try:
            data_source(config)
        except DataError as e:  # the run's data was moved or deleted
            target.skip(str(e))
    if not target.data:
        target.skip(
            f"no test set: pass --data (no run folder {run_dir or target.source_run} with a config.json "
            f"to take it from)"
        )


def check_device(device: str) -> None:
    if device != "cpu":
        raise UsageError(f"unsupported device '{device}': only --device cpu can be benchmarked for now")


def parse_threads(value: str | Sequence[int]) -> tuple[int, ...]:
    """'1,2' -> (1, 2): distinct, in the order given, each checked as every runtime checks --threads."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        threads = tuple(dict.fromkeys(int(str(v).strip()) for v in items if str(v).strip()))
    except ValueError:
        raise UsageError(f"--threads takes a comma-separated list of thread counts like 1,2, got '{value}'") from None
    if not threads:
        raise UsageError(f"--threads needs at least one thread count, got '{value}'")
    for n in threads:
        check_threads(n)
    return threads
