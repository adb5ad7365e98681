"""PT2E quantization (torch.export + torchao's prepare/convert), shared by the backends that quantize that way:
LiteRT (litert-torch's PT2EQuantizer) and ExecuTorch (XNNPACKQuantizer). Both quantizers are copies of one
design, so the fixes here apply to both; every import of torch/torchao stays inside the functions.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from .base import Calibration


def quantizer_with_fused_relu6(quantizer_class: type) -> type:
    """`quantizer_class` (a PT2E quantizer with a `global_config`, such as XNNPACKQuantizer) that also quantizes
    a conv followed by ReLU6 as one op, as it already does a conv followed by ReLU.

    Both quantizers quantize the conv's output before a ReLU6 (aten.relu6, or aten.hardtanh(0, 6) for
    nn.ReLU6, whose output then shares that observer): on the range of the pre-activation, negative and
    large values included. 8 bits over that range cost EfficientNet-Lite0 (33 conv + ReLU6 pairs) 4.0 points
    of top-1 (85.85 % against 89.85 % on 2,000 test images, minmax, PT2E's own graph in torch). Quantized after
    the clamp, on [0, 6] at most, it costs 0.25 points there; the LiteRT file 90.04 % against 86.91 % and the
    ExecuTorch file 90.10 % against 86.93 % on the full test set (FP32: 90.16 %). The two LiteRT files ran at
    0.790 and 0.774 ms side by side in one bench. TFLite (fused RELU6) and XNNPACK (a conv's output clamp) run
    the pair as one kernel either way, and ONNX Runtime's quantizer drops the Clip after a QDQ conv the same way (Lite0's INT8 ONNX file holds no Clip).
    """

    class Quantizer(quantizer_class):
        def annotate(self, model):
            if self.global_config is not None:  # the pairs take the global config (edgecifar sets only that)
                annotate_conv_relu6(model, self.global_config)
            return super().annotate(model)

    Quantizer.__name__ = Quantizer.__qualname__ = f"{quantizer_class.__name__}FusedReLU6"
    return Quantizer


def annotate_conv_relu6(graph: Any, config: Any) -> int:
    """Annotate each conv -> ReLU6 pair of a torch.export graph (BN already folded, as prepare_pt2e
    does before annotating) not yet annotated: the conv's input, weight and bias as `config` says, its output
    not at all, the clamp's output with the config's output activation. Returns the pairs annotated."""
    import torch
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    convs = (torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)
    relu6 = (torch.ops.aten.relu6.default, torch.ops.aten.relu6_.default)  # F.relu6
    hardtanh = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)  # nn.ReLU6 (timm's)
    found = 0
    for clamp in graph.graph.nodes:
        if clamp.op != "call_function" or not (
            clamp.target in relu6 or clamp.target in hardtanh and tuple(clamp.args[1:3]) == (0, 6)
        ):
            continue
        conv = clamp.args[0]
        if not isinstance(conv, torch.fx.Node) or conv.target not in convs or len(conv.users) != 1:
            continue  # a conv output used elsewhere too must be quantized on its own
        if conv.target == torch.ops.aten.convolution.default and conv.args[6]:
            continue  # transposed: its per-channel weights lie on axis 1, not the config's axis 0
        if "quantization_annotation" in conv.meta or "quantization_annotation" in clamp.meta:
            continue
        inputs = {conv.args[0]: config.input_activation, conv.args[1]: config.weight}
        if len(conv.args) > 2 and isinstance(conv.args[2], torch.fx.Node) and config.bias is not None:
            inputs[conv.args[2]] = config.bias
        conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=inputs, _annotated=True)
        clamp.meta["quantization_annotation"] = QuantizationAnnotation(
            output_qspec=config.output_activation, _annotated=True
        )
        found += 1
    return found


def calibrated(graph: Any, quantizer: Any, calibration: Calibration, learned: list, fold_quantize: bool = True) -> Any:
    """A torch.export graph module quantized: prepared by `quantizer`, its observers run over the calibration
    batches (uint8 NHWC), a QAT model's `learned` ranges kept (keep_learned_ranges), then converted to
    quantize/dequantize pairs around the quantized ops."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    with torch.no_grad():
        prepared = prepare_pt2e(graph, quantizer)
        for images in calibration.batches():
            prepared(torch.from_numpy(images))
        keep_learned_ranges(prepared, learned)
        with _without_qat_folding():
            return convert_pt2e(prepared, fold_quantize=fold_quantize)


@contextlib.contextmanager
def _without_qat_folding() -> Iterator[None]:
    """convert_pt2e without its conv-bn QAT folding pass, which rewrites graphs from prepare_qat_pt2e. One from
    prepare_pt2e (ours, QAT runs included) had each conv-bn pair folded when prepared, yet while any batch norm is
    left (airbench's, after the max-pool) the pass traces hundreds of patterns that cannot match: tens of
    seconds of each airnet INT8 export, with files byte for byte the same without it (docs/design-notes.md)."""
    from torchao.quantization.pt2e import quantize_pt2e

    original = getattr(quantize_pt2e, "_fold_conv_bn_qat", None)
    if original is None:  # a torchao without the pass: nothing to skip
        yield
        return
    quantize_pt2e._fold_conv_bn_qat = lambda model: model
    try:
        yield
    finally:
        quantize_pt2e._fold_conv_bn_qat = original


def with_minmax_activations(config: Any) -> Any:
    """A PT2E quantization config (LiteRT's or XNNPACK's) whose activation observers are plain min/max over the
    calibration images: our "minmax" method (their default is a histogram observer, our "default")."""
    from dataclasses import replace

    from torchao.quantization.pt2e.observer import MinMaxObserver

    act = replace(config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    return replace(config, input_activation=act, output_activation=act)


def keep_learned_ranges(prepared: Any, learned: list) -> int:
    """After PT2E calibration of a QAT model's twin: the observer of each tensor a learned activation range
    (edgecifar.qat.ActivationRange: module, op, call index) quantizes becomes a min/max observer that holds
    that range, so convert_pt2e quantizes with QAT's scale and zero point rather than calibration's. Where
    PT2E shares one observer between tensors that must keep one scale (XNNPACK: a ReLU's output and the
    average pool after it), it holds the union of their learned ranges: the narrower one alone clipped
    edge_tiny's ReLU outputs (85 % top-1 agreement). Returns how many ranges found their tensor (an op that
    PT2E does not observe, such as a BN folded into its conv, keeps none)."""
    import torch
    from torchao.quantization.pt2e.observer import MinMaxObserver, ObserverBase

    calls: dict[tuple[str, str], list[Any]] = {}
    for node in prepared.graph.nodes:
        if node.op == "call_function" and str(node.target).startswith("aten."):
            stack = list(node.meta.get("nn_module_stack", {}).values())
            calls.setdefault((stack[-1][0] if stack else "", str(node.target).split(".")[1]), []).append(node)
    wanted: dict[int, tuple[Any, list]] = {}  # per observer object: the learned ranges of its tensors
    for r in learned:
        nodes = calls.get((r.module, r.op), [])
        for user in list(nodes[r.index].users) if r.index < len(nodes) else []:
            observer = getattr(prepared, str(user.target), None) if user.op == "call_module" else None
            if isinstance(observer, ObserverBase) and getattr(observer, "qscheme", None) == torch.per_tensor_affine:
                wanted.setdefault(id(observer), (observer, []))[1].append(r)
    for old, ranges in wanted.values():
        fixed = MinMaxObserver(
            dtype=old.dtype, qscheme=old.qscheme, quant_min=old.quant_min, quant_max=old.quant_max, eps=old.eps.item()
        )
        # torchao's min/max qparams give back a learned range's own scale and zero point
        fixed(
            torch.tensor(
                [
                    min((r.qmin - r.zero_point) * r.scale for r in ranges),
                    max((r.qmax - r.zero_point) * r.scale for r in ranges),
                ]
            )
        )
        for name, module in list(prepared._modules.items()):  # every alias of the shared observer
            if module is old:
                setattr(prepared, name, fixed)
    return sum(len(ranges) for _, ranges in wanted.values())


def global_max_pools_as_amax(model: Any) -> Any:
    """An eval copy of the model whose global max pools (nn.AdaptiveMaxPool2d to 1x1: the airnets' and edge nets'
    heads) are an amax over H and W, the same values: neither litert-torch 0.10 nor ExecuTorch 1.5 (not core
    ATen) lowers aten.adaptive_max_pool2d."""
    import copy

    from torch import nn

    class GlobalMaxPool(nn.Module):
        def forward(self, x):
            return x.amax(dim=(2, 3), keepdim=True)

    found = copy.deepcopy(model).eval()
    for name, module in list(found.named_modules()):
        if isinstance(module, nn.AdaptiveMaxPool2d) and module.output_size in (1, (1, 1), [1, 1]):
            parent, _, attr = name.rpartition(".")
            setattr(found.get_submodule(parent) if parent else found, attr, GlobalMaxPool())
    return found
