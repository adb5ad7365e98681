"""One error hierarchy. The CLI turns any EdgecifarError into one line and an exit code."""


class EdgecifarError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, ...)."""

    exit_code = 1


class UsageError(EdgecifarError):
    """A bad option value or name on the command line (or the same passed to a library function)."""

    exit_code = 2  # what click/Typer use for their own usage errors


class DataError(EdgecifarError):
    """A data source is missing, empty, corrupt or unreachable."""

    exit_code = 2


class ModelError(EdgecifarError):
    """An unknown model name or weights that do not fit the model."""

    exit_code = 3


class CheckpointError(EdgecifarError):
    """A run folder or checkpoint is missing, corrupt or mismatched."""

    exit_code = 4


class ExportError(EdgecifarError):
    """An export failed, or its verification against PyTorch failed."""

    exit_code = 5


class ArtifactError(EdgecifarError):
    """An exported file is missing, corrupt, or does not match its manifest."""

    exit_code = 6


class BenchError(EdgecifarError):
    """Nothing could be measured, or a bench option is unsupported."""

    exit_code = 7


class DiskFullError(EdgecifarError):
    """A write failed for lack of room: the disk is full, a quota or the file-size limit (ulimit -f) is reached."""

    exit_code = 8


class TrainingError(EdgecifarError):
    """Training cannot go on: the loss or the weights became NaN or infinite (diverged)."""

    exit_code = 9
