"""The QAT model format: what a run made by `edgecifar qat` (edgecifar.qat) holds and how it is read back.

Such a run's weights carry NNCF's quantizers' tensors (NNCF_PREFIX keys) and its config.json a "qat" section
with NNCF's JSON of where they sit: `quantized_model` rebuilds the model from it (runs.load_run), and
`requantizable` gives the exporters that quantize a float graph themselves its float twin on the learned weight
grids and the activation ranges it learned. This module imports only edgecifar.errors and edgecifar.records
(torch and nncf inside the functions), so that the run loader and the backends read QAT runs without importing the training code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from .records import RunConfig

NNCF_PREFIX = "__nncf"  # state-dict keys of NNCF's quantizers (scales, ranges), beside the model's own


def qat_section(config: RunConfig) -> dict[str, Any] | None:
    """A run's config.json "qat" section (None for any other run). Raises CheckpointError when it is there but
    lacks what rebuilding and exporting the QAT model read."""
    from .errors import CheckpointError

    section = config.qat
    if section is None:
        return None
    needed = ("nncf", "int8_isa", "source_run", "epochs")
    if not isinstance(section, dict) or any(k not in section for k in needed):
        raise CheckpointError(
            f"config.json's QAT section must hold {', '.join(needed)}: not a run made by `edgecifar qat`"
        )
    return section


def nncf_config(model: Any) -> dict[str, Any]:
    """Where NNCF's quantizers sit in `model`, as JSON (nncf.torch.get_config): with the weights, what
    `quantized_model` rebuilds the QAT model from."""
    from nncf.torch import get_config

    return get_config(model)


def quantized_model(model: Any, config: dict[str, Any]) -> Any:
    """`model` with the quantizers that `config` (nncf_config's JSON) places; load the run's weights after.
    Only NNCF's two quantizer classes are built from the JSON (a config naming anything else is refused), so a
    config.json cannot make this import or run other code. Raises CheckpointError for a config it cannot use."""
    from .errors import CheckpointError

    commands = config.get("compression_state") if isinstance(config, dict) else None
    if not isinstance(commands, list) or not all(
        isinstance(c, dict) and c.get("module_path") == _QUANTIZERS_MODULE and c.get("module_cls_name") in _QUANTIZERS
        for c in commands
    ):
        raise CheckpointError(
            f"the run's QAT section places modules other than NNCF's quantizers ({', '.join(_QUANTIZERS)}): refused"
        )
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from nncf.torch import load_from_config

    quantize_with_torch_ops()
    try:
        return load_from_config(model, config, allowed_modules=(_QUANTIZERS_MODULE,))
    except Exception as e:
        raise CheckpointError(f"the run's QAT section does not fit its model: {str(e).splitlines()[0][:200]}") from e


_QUANTIZERS_MODULE, _QUANTIZERS = "nncf.torch.quantization.layers", ("SymmetricQuantizer", "AsymmetricQuantizer")


def quantize_with_torch_ops() -> None:
    """Make NNCF's quantizers compute on the CPU with torch's own ops (NNCF's reference functions, run eagerly)
    instead of the C++ extension NNCF compiles on first use.

    That extension needs g++ and ninja, and on a fresh machine its first build can take longer than NNCF's 60 s
    limit (NNCF_EXTENSION_LOAD_TIMEOUT): `edgecifar qat` then failed. Its source
    (nncf/torch/extensions/src/quantization/cpu/functions_cpu.cpp) is the same ATen ops as the reference
    (clamp to the range, shift by the zero point, round, rescale; the straight-through gradient): both give
    bitwise-equal outputs and gradients in the same time (docs/design-notes.md). NNCF itself falls back to the
    reference where the build fails, though through torch.compile, a compiler again. An extension this process
    already loaded is kept."""
    from types import SimpleNamespace

    from nncf.torch.quantization import extensions
    from nncf.torch.quantization.reference import ReferenceBackendType, ReferenceQuantize

    ops = ReferenceQuantize(ReferenceBackendType.TORCH)
    reference = SimpleNamespace(Quantize_forward=ops.forward, Quantize_backward=ops.backward)
    extensions.QuantizedFunctionsCPULoader.load = classmethod(lambda cls: reference)


X86_WEIGHT_STEPS = 64  # --int8-isa x86: weights within +-64 steps of their grid (7 bits; edgecifar.isa)


def _within_x86_steps(quantizer: Any, weight: Any) -> None:
    """Raise the weight quantizer's scale, per channel, where the weight would span more than +-64 steps.

    NNCF's overflow fix only starts a quantizer on half of its 8-bit range (its scale doubled); training then
    moves weights and scales freely: at lr 1e-3 a tiny run's weights reached +-126 steps, 8-bit weights that
    overflow in the int16 sums of AVX2 CPUs. Called before every quantization of the weight, and once more
    after the last step, this keeps the run exact on every x86 CPU."""
    import torch

    with torch.no_grad():
        top = weight.abs().amax(dim=tuple(range(1, weight.dim())), keepdim=True).reshape(quantizer.scale.shape)
        quantizer.scale.data.copy_(torch.maximum(quantizer.scale.data, top * quantizer.level_high / X86_WEIGHT_STEPS))


def weight_quantizers(model: Any) -> list[tuple[Any, Any]]:
    """(quantizer, weight parameter) for each NNCF quantizer on an op's weight input (its port 1) whose
    weight is a module's `weight`. Raises ExportError for one that is not."""
    import torch
    from nncf.torch.function_hook.hook_storage import decode_hook_name
    from nncf.torch.function_hook.wrapper import get_hook_storage

    from .errors import ExportError

    found = []
    for name, quantizer in get_hook_storage(model).named_hooks():
        kind, op_name, port = decode_hook_name(name)
        if kind == "pre_hooks" and port == 1:
            weight = getattr(model.get_submodule(_module_of(op_name)), "weight", None)
            if not isinstance(weight, torch.nn.Parameter):
                raise ExportError(f"QAT: the weight quantizer at {op_name} is not on a module's weight")
            found.append((quantizer, weight))
    return found


def _module_of(op_name: str) -> str:
    """NNCF's op name "backbone/layers/1/conv1/conv2d/0" -> module "backbone.layers.1.conv1"."""
    return ".".join(p for p in op_name.split("/")[:-2] if p)


@dataclass(frozen=True)
class ActivationRange:
    """One learned activation quantizer of a QAT model: it quantizes the output of call `index` (0-based) of
    the torch op `op` inside module `module` ("" for the model's own forward), in torch's fake-quantize
    convention q = clamp(round(x / scale) + zero_point, qmin, qmax), x = (q - zero_point) * scale."""

    module: str
    op: str
    index: int
    scale: float
    zero_point: int
    qmin: int
    qmax: int


def requantizable(model: Any) -> tuple[Any, list[ActivationRange]]:
    """For exporters that quantize a float graph themselves (ONNX Runtime's quantize_static): a float copy of
    the QAT model whose weights are snapped to the grids its weight quantizers learned (so per-channel weight
    quantization on those grids is exact), and the activation ranges its other quantizers learned, which
    replace calibration for the tensors they quantize. The way Intel Neural Compressor ships PyTorch QAT as
    INT8 ONNX (an FP32 export, quantized with the scales QAT learned).

    Raises ExportError for a quantizer on a weight that is not a module's `weight` parameter, or elsewhere
    than on an op's weight input or output."""
    import copy

    import torch
    from nncf.torch.function_hook.hook_storage import decode_hook_name
    from nncf.torch.function_hook.wrapper import ATR_HOOK_STORAGE, get_hook_storage

    from .errors import ExportError

    twin, ranges = copy.deepcopy(model).eval(), []
    with torch.no_grad():
        for quantizer, weight in weight_quantizers(twin):  # snapped onto the grid its quantizer learned
            weight.copy_(quantizer.eval().quantize(weight))
        for name, quantizer in list(get_hook_storage(twin).named_hooks()):
            kind, op_name, port = decode_hook_name(name)
            if kind == "post_hooks" and port == 0:  # an op's output
                qmin, qmax, scale, zero_point = quantizer.get_parameters_for_torch_fq()
                *_, op, index = op_name.split("/")
                ranges.append(
                    ActivationRange(
                        _module_of(op_name), op, int(index), float(scale[0]), int(zero_point[0]), int(qmin), int(qmax)
                    )
                )
            elif not (kind == "pre_hooks" and port == 1):
                raise ExportError(f"QAT: a quantizer at {kind} {op_name} port {port} is not one edgecifar exports")
    del twin.forward  # NNCF's ForwardWithHooks, an instance attribute over the class's forward
    delattr(twin, ATR_HOOK_STORAGE)
    twin.meta = replace(model.meta, qat=None)
    return twin, ranges
