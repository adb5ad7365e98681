"""OpenVINO backend: IR (.xml + .bin) by openvino.convert_model/save_model, FP16 by compress_to_fp16, INT8 by
nncf.quantize of the converted FP32 model; load and run with openvino. Only `export` needs torch and nncf."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..accuracy_control import EVAL_BATCH, Control, accuracy, control_metadata, outcome
from ..errors import ArtifactError, ExportError
from ..quiet import quiet_libraries
from .base import INPUT_NAME, OUTPUT_NAME, Calibration, Session, error_text

quiet_libraries()  # before openvino or nncf load (edgecifar.quiet)

RT_SECTION = "edgecifar"  # our metadata lives under rt_info/edgecifar/<key>
METADATA_KEYS = (
    "edgecifar_version",
    "format",
    "precision",
    "model",
    "classes",
    "num_classes",
    "img_size",
    "source_run",
    "source_sha256",
    "input",
    "output",
    "contract",
    "opset",
    "int8_isa",
    "int8_weight_bits",
    "float_nodes",
    "accuracy_drop",
    "quantization",
)
# inference precision hints we accept; "auto" leaves the plugin's own choice (bf16 on CPUs that have it)
HINTS = ("f32", "bf16", "f16", "auto")
# nncf range estimators for our calibration methods (None: nncf's default, mean of per-batch min/max);
# nncf has no entropy calibration: its histogram estimator (minimises the quantization error) is the nearest
NNCF_CALIB = {"default": None, "minmax": "MINMAX", "percentile": "MEAN_QUANTILE", "entropy": "HISTOGRAM"}


class OpenVinoBackend:
    name, label = "openvino", "OpenVINO"
    suffixes = (".xml", ".bin")
    runtime = "openvino"
    libraries = ("torch", "openvino", "nncf")
    precisions = ("fp32", "fp16", "int8")
    calib_methods = {k: v or "nncf default" for k, v in NNCF_CALIB.items()}
    exec_precision = "f32"  # load() pins INFERENCE_PRECISION_HINT=f32 unless asked otherwise
    exec_hints = ("bf16", "f16", "auto")
    install = "pip install openvino"
    startup_s = 1.2
    int8_isa_rule = True
    isa_switch = "env"  # oneDNN's own ISA cap (ONEDNN_MAX_CPU_ISA): real kernels, real timings
    accuracy_control = True
    qat = "native"  # a QAT run: NNCF's quantizers converted as they are

    def metadata(self) -> dict[str, str]:
        return {}

    def threads_used(self, session: Session) -> int | None:
        return int(session.extra["compiled"].get_property("INFERENCE_NUM_THREADS"))

    # ------------------------------------------------------------ export (host side: torch, nncf)

    def export(
        self, model: Any, path: Path, precision: str, calibration: Calibration | None, metadata: dict[str, str]
    ) -> list[Path]:
        import openvino as ov

        if precision not in ("fp32", "fp16", "int8"):
            raise ExportError(f"openvino: unknown precision '{precision}'")
        ov_model = _convert(model)
        if precision == "int8" and model.meta.qat is None:  # a QAT model converts with its FakeQuantize nodes
            if calibration is None:
                raise ExportError("INT8 export needs calibration images")
            ov_model = _quantize(ov_model, calibration, metadata)
        _set_names_and_metadata(ov_model, metadata)
        try:
            # save_model compresses to FP16 by default: only the fp16 precision asks for it
            ov.save_model(ov_model, str(path), compress_to_fp16=precision == "fp16")
        except Exception as e:
            raise ExportError(f"openvino.save_model failed: {error_text(e)}") from e
        return [path, path.with_suffix(".bin")]

    # ------------------------------------------------------------ device side (openvino + numpy)

    def export_controlled(
        self, model: Any, path: Path, calibration: Calibration, metadata: dict[str, str], log: Callable[[str], None]
    ) -> tuple[list[Path], dict[str, Any]]:
        """The INT8 file at `path` under calibration.control's bound, by NNCF's own search (`nncf_control`):
        (files, edgecifar.accuracy_control.outcome). Raises ExportError when NNCF fails."""
        control = calibration.control
        files = self.export(model, path, "int8", calibration, metadata)  # nncf's search; fills in the metadata
        drop = float(metadata["accuracy_drop"])
        float_nodes = json.loads(metadata["float_nodes"])
        log(
            f"{self.name} int8: {len(float_nodes)} layer(s) in float, drop {drop:.2f} "
            f"points on {len(control.labels)} held-out training images (bound {control.max_drop})"
        )
        return files, outcome(control, float_nodes, drop, round(control.float_accuracy - drop / 100, 6))

    def load(self, path: Path, threads: int | None = None, precision: str | None = None) -> Session:
        """Compile for CPU. precision: the INFERENCE_PRECISION_HINT; None pins f32 so that an FP32 figure is
        FP32 (OpenVINO would otherwise run FP32/FP16 IRs in bf16 on CPUs that have it)."""
        hint = precision or "f32"
        if hint not in HINTS:
            raise ArtifactError(f"unknown OpenVINO precision hint '{hint}': use one of {', '.join(HINTS)}")
        try:
            import openvino as ov
        except ImportError as e:
            raise ArtifactError("openvino is not installed: pip install openvino") from e
        if not path.with_suffix(".bin").is_file():
            raise ArtifactError(f"{path}: its weights file {path.with_suffix('.bin').name} is missing")
        config: dict[str, Any] = {} if hint == "auto" else {"INFERENCE_PRECISION_HINT": hint}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        try:
            ov_model = core.read_model(str(path))
            compiled = core.compile_model(ov_model, "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError with a multi-line C++ trace
            raise ArtifactError(
                f"cannot load {path} with OpenVINO {ov.get_version()}: {error_text(e)}{_file_versions(path)}"
            ) from e
        if len(compiled.inputs) != 1 or len(compiled.outputs) < 1:
            raise ArtifactError(f"{path}: expected one input and one output")
        inp, out = compiled.input(0), compiled.output(0)
        return Session(
            handle=compiled.create_infer_request(),
            metadata=_read_rt_info(ov_model),
            input_type=_OV_TYPES.get(inp.get_element_type().get_type_name(), "?"),
            input_shape=_dims(inp.get_partial_shape()),
            output_shape=_dims(out.get_partial_shape()),
            extra={"compiled": compiled, "hint": hint},
        )

    def run(self, session: Session, images: np.ndarray) -> np.ndarray:
        request = session.handle
        request.infer({0: images})
        # the request reuses its output buffer on the next call: hand back a copy
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)


_OV_TYPES = {"u8": "uint8", "f32": "float32", "f16": "float16"}


def _file_versions(path: Path) -> str:
    """ " (the file is IR v11, saved by OpenVINO 2026.4.1)": what a runtime must read, for its error message.
    Both are near the ends of the .xml: the version on its <net> tag, the saver in <rt_info>."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            f.seek(max(0, path.stat().st_size - 65536))
            tail = f.read()
    except OSError:
        return ""
    ir = re.search(rb"<net\b[^>]*\bversion=\"(\d+)\"", head)
    saved = re.search(rb"<Runtime_version\s+value=\"([^\"]+)\"", tail)
    if ir is None:
        return ""
    by = f", saved by OpenVINO {saved.group(1).decode(errors='replace')}" if saved else ""
    return f" (the file is IR v{ir.group(1).decode()}{by})"


def _dims(shape: Any) -> list[int | None]:
    return [d.get_length() if d.is_static else None for d in shape]


def _read_rt_info(ov_model: Any) -> dict[str, str]:
    found = {}
    for key in METADATA_KEYS:
        if ov_model.has_rt_info([RT_SECTION, key]):
            found[key] = ov_model.get_rt_info([RT_SECTION, key]).astype(str)
    return found


_CONVERTED: dict[tuple[int, str], Any] = {}  # one convert_model per model, cloned for every precision


def _convert(model: Any) -> Any:
    import openvino as ov
    import torch

    from ..contract import model_size

    key = (id(model), model.meta.source_sha256 or "")
    height, width = model_size(model.meta)  # the run's input size
    if key not in _CONVERTED:
        example = torch.zeros(1, height, width, 3, dtype=torch.uint8)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit.trace deprecation and traced shape checks
            try:
                converted = ov.convert_model(
                    model.eval(), example_input=example, input=[(ov.PartialShape([-1, height, width, 3]), ov.Type.u8)]
                )
            except Exception as e:
                raise ExportError(f"openvino.convert_model failed: {error_text(e)}") from e
        _CONVERTED.clear()  # hold one model at most
        _CONVERTED[key] = converted
    return _CONVERTED[key].clone()  # callers rename, annotate and quantize their own copy


_AUTO_NAME = re.compile(r"^[A-Za-z]+_\d+$")  # "Constant_105342": numbered by a process-wide counter


def _set_names_and_metadata(ov_model: Any, metadata: dict[str, str]) -> None:
    # OpenVINO numbers unnamed nodes (and the model) with process-wide counters, so the same export done twice
    # gives different .xml files; renumbering them in graph order makes the files reproducible
    ov_model.set_friendly_name(metadata.get("model", "edgecifar"))
    for i, op in enumerate(ov_model.get_ordered_ops()):
        if _AUTO_NAME.match(op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}_{i}")
    # convert_model names the input after forward()'s argument and leaves the output unnamed
    ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
    ov_model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    for key, value in metadata.items():
        ov_model.set_rt_info(str(value), [RT_SECTION, key])


def openvino_ptq_parameters(isa: str, num_batches: int, **advanced: Any) -> tuple[dict[str, Any], Any]:
    """nncf.quantize's settings and advanced parameters for this exporter's INT8 (edgecifar.qat's quantizers
    start from the same, with the fast bias correction nncf's torch backend has): PERFORMANCE preset
    (symmetric), exactly `num_batches` calibration batches, full bias correction, statistics per image, and the
    weight rule of `isa` (edgecifar.isa)."""
    import nncf
    from nncf.quantization.advanced_parameters import OverflowFix

    # full bias correction (layer by layer, on the quantized model's own activations) rather than nncf's fast
    # one: it removed the largest INT8 drops of the reference runs for a few seconds more per export
    # (docs/design-notes.md)
    return (
        {"preset": nncf.QuantizationPreset.PERFORMANCE, "subset_size": num_batches, "fast_bias_correction": False},
        nncf.AdvancedQuantizationParameters(
            # each item is a batch of images: statistics per image, as if batch size were 1 (nncf's defaults
            # are tuned for that); safe here, the batch is axis 0 of every activation of these CNNs
            batchwise_statistics=True,
            # 7-bit weights in every layer (nncf's default: the first only), so that the file is exact on
            # CPUs without VNNI too (edgecifar.isa); --int8-isa vnni keeps 8 bits
            overflow_fix=OverflowFix.DISABLE if isa == "vnni" else OverflowFix.ENABLE,
            **advanced,
        ),
    )


def _quantize(ov_model: Any, calibration: Calibration, metadata: dict[str, str]) -> Any:
    """nncf post-training quantization (under an accuracy bound: calibration.control, whose outcome goes into
    `metadata`). Memory stays bounded: statistics are reduced inside the graph
    (inplace), batches are small, and subset_size counts batches, so exactly the given images are used."""
    # importing nncf loads torch.utils.cpp_extension, which logs a CUDA warning that is noise on a CPU host
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    nncf.set_log_level(logging.ERROR)  # its notes would swamp the CLI's output
    estimator = NNCF_CALIB[calibration.method]
    batches = list(calibration.batches())
    settings, advanced = openvino_ptq_parameters(
        calibration.isa,
        len(batches),
        inplace_statistics=True,
        **(
            {"activations_range_estimator_params": getattr(RangeEstimatorParametersSet, estimator)} if estimator else {}
        ),
    )
    settings["ignored_scope"] = nncf.IgnoredScope(names=list(calibration.exclude), validate=False)
    try:
        # nncf draws rich progress bars on stdout with no switch to turn them off: send them nowhere
        with contextlib.redirect_stdout(io.StringIO()):
            if calibration.control is not None:
                return nncf_control(
                    ov_model,
                    batches,
                    calibration.control,
                    {**settings, "advanced_quantization_parameters": advanced},
                    metadata,
                )
            return nncf.quantize(ov_model, nncf.Dataset(batches), advanced_parameters=advanced, **settings)
    except Exception as e:
        raise ExportError(f"nncf.quantize failed: {error_text(e)}") from e


def nncf_control(
    ov_model: Any,
    calibration_batches: list[np.ndarray],
    control: Control,
    quantize_kwargs: dict,
    metadata: dict[str, str],
) -> Any:
    """nncf.quantize_with_accuracy_control with the same quantization settings as the plain path; records the
    layers left in float and the drop it measured into `metadata` (the caller writes it into the file)."""
    import nncf
    import openvino as ov

    validation = [
        (control.images[i : i + EVAL_BATCH], control.labels[i : i + EVAL_BATCH])
        for i in range(0, len(control.labels), EVAL_BATCH)
    ]

    def validate(compiled: Any, items: Any) -> tuple[float, None]:
        pairs = list(items)
        x = np.concatenate([p[0] for p in pairs])
        y = np.concatenate([p[1] for p in pairs])
        return accuracy(lambda b: compiled(b)[0], x, y), None

    try:
        quantized = nncf.quantize_with_accuracy_control(
            ov_model,
            nncf.Dataset(calibration_batches),
            nncf.Dataset(validation, lambda item: item[0]),
            validate,
            max_drop=control.max_drop / 100,
            drop_type=nncf.DropType.ABSOLUTE,
            **quantize_kwargs,
        )
    except Exception as e:
        raise ExportError(f"nncf.quantize_with_accuracy_control failed: {e}") from e
    compiled = ov.Core().compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    int8_accuracy = validate(compiled, validation)[0]
    metadata.update(control_metadata(float_layers(quantized), control.drop_points(int8_accuracy)))
    return quantized


_WEIGHTED = {"Convolution", "GroupConvolution", "MatMul"}
_PASS = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze"}


def float_layers(ov_model: Any) -> list[str]:
    """Names of the convolutions and matrix products whose weights are not quantized (no FakeQuantize and no
    8-bit constant on their weight path)."""
    found = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() not in _WEIGHTED:
            continue
        pending, quantized = [op.input_value(1).get_node()], False
        while pending and not quantized:
            node = pending.pop()
            kind = node.get_type_name()
            quantized = kind == "FakeQuantize" or (
                kind == "Constant" and node.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4")
            )
            if kind in _PASS:
                pending += [node.input_value(i).get_node() for i in range(node.get_input_size())]
        if not quantized:
            found.append(op.get_friendly_name())
    return found
