"""Library noise kept out of edgecifar's output, at its source and in one place.

The converters and runtimes edgecifar drives speak on their own: TensorFlow's C++ start-up lines (litert-torch
imports it), LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", ExecuTorch's cpuinfo and
threadpool lines, JAX's warning when a process forks after it started threads, ONNX Runtime's quantizer logging
"Axis 1 is out-of-range for weight ..." on the root logger (a rank-1 tensor quantized per tensor, as it should
be), torch's notice about an Enum registered as a pytree constant, and OpenVINO's and NNCF's usage telemetry, whose
sender thread prints a traceback where there is no network. What the user reads is ours: each is silenced where
it starts, by the library's own switch where it has one (an environment variable read at import, a logger's
level), else by filtering the C++ stream around the one call that writes it. An error a library writes there is
still shown.

Stdlib only: the device-side runtime imports it through the backends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from typing import Iterator

# read by the libraries when they load, so set before they are imported
ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3"}  # TensorFlow's C++ INFO/WARNING lines
# lines the C++ side writes to the process's stderr that say nothing to a user of edgecifar
NOISE = re.compile(
    r"^(INFO: Created TensorFlow Lite XNNPACK delegate"
    r"|WARNING: All log messages before absl::InitializeLog"
    r"|I\d{4} .*port\.cc:\d+\] oneDNN custom operations are on"
    r"|\[cpuinfo_utils\.cpp:\d+\]|\[threadpool\.cpp:\d+\] Resetting threadpool)"
)
_done = False


def quiet_libraries() -> None:
    """Set each library's own switch (idempotent); call before the libraries are imported.

    OpenVINO's converter and NNCF send usage telemetry through the `openvino_telemetry` package when it is
    installed and otherwise take their own no-telemetry path (OpenVINO's `telemetry_stub`, NNCF's stub): this
    process takes that path. A user's own consent file (`opt_in_out --opt_out`) is untouched."""
    global _done
    if _done:
        return
    _done = True
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import raises ImportError
    # JAX (litert-torch's lowering) warns on any os.fork() once it runs threads; edgecifar's own workers are
    # started with subprocess (fork + exec), and no JAX code runs in a child
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    logging.getLogger().addFilter(_not_from("onnxruntime" + os.sep + "quantization"))


def _not_from(path_part: str) -> logging.Filter:
    """A root-logger filter dropping the notes (under ERROR) that code under `path_part` logs on the root logger."""

    class NotFrom(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return record.levelno >= logging.ERROR or path_part not in record.pathname

    return NotFrom()


@contextlib.contextmanager
def c_stderr_filtered() -> Iterator[None]:
    """Around a call into a library's C++ code: what it writes to the process's stderr (file descriptor 2) is
    held, and every line but the known NOISE is written out afterwards."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (an embedding host): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [
                line for line in held.read().decode(errors="replace").splitlines(keepends=True) if not NOISE.match(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
