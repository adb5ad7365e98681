"""PT2E quantization shared by LiteRT and ExecuTorch: conv + ReLU6 quantized as one op."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")


class ConvBnReLU6(torch.nn.Module):
    """Conv -> BN -> ReLU6 twice, the convs' outputs spread far past [0, 6] (about -40..40): a ReLU6
    quantized on its input's range gets steps of about 0.3 where [0, 6] needs 0.024."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.conv2, self.bn2 = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.bn1.weight.data.fill_(15.0), self.bn2.weight.data.fill_(15.0)

    def forward(self, x):
        x = torch.nn.ReLU6(inplace=True)(self.bn1(self.conv1(x)))  # timm's: aten.hardtanh_(x, 0, 6)
        return torch.nn.functional.relu6(self.bn2(self.conv2(x)))  # aten.relu6


def quantizer(name):
    """(PT2E quantizer class, its config function) of the backend `name`; skips when it is not installed."""
    if name == "xnnpack":
        module = pytest.importorskip("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
        return module.XNNPACKQuantizer, module.get_symmetric_quantization_config
    module = pytest.importorskip("litert_torch.quantize.pt2e_quantizer")
    return module.PT2EQuantizer, module.get_symmetric_quantization_config


def quantize(quantizer_class, config, images):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgecifar.backends.pt2e import with_minmax_activations

    model = ConvBnReLU6().eval()
    prepared = prepare_pt2e(
        torch.export.export(model, (images,)).module(),
        quantizer_class().set_global(with_minmax_activations(config(is_per_channel=True))),
    )
    with torch.no_grad():
        prepared(images)
        return model, convert_pt2e(prepared)


@pytest.mark.parametrize("name", ["xnnpack", "litert"])
def test_conv_and_relu6_are_quantized_as_one_op(name):
    from edgecifar.backends.pt2e import quantizer_with_fused_relu6

    quantizer_class, config = quantizer(name)
    images = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    model, plain = quantize(quantizer_class, config, images)
    _, fused = quantize(quantizer_with_fused_relu6(quantizer_class), config, images)

    def relu6_inputs(graph):
        return [
            str(n.args[0].target) for n in graph.graph.nodes if "relu6" in str(n.target) or "hardtanh" in str(n.target)
        ]

    assert len(relu6_inputs(fused)) == 2 and all("conv" in t for t in relu6_inputs(fused))
    assert len(relu6_inputs(plain)) == 2 and all("dequantize" in t for t in relu6_inputs(plain))  # alone: quantized
    output_scales = [
        float(n.args[1])
        for n in fused.graph.nodes
        if "quantize_per_tensor" in str(n.target) and "dequantize" not in str(n.target)
    ]
    assert max(output_scales) <= 6.0 / 255 * 1.001  # the input and both ReLU6 outputs: [0, 6] in 8 bits at most
    with torch.no_grad():
        want = model(images)
        error_fused, error_plain = ((m(images) - want).abs().mean().item() for m in (fused, plain))
    assert error_fused < error_plain / 1.5, (error_fused, error_plain)  # measured: 0.013 against 0.026


def test_a_conv_output_used_twice_is_left_to_the_quantizer():
    """A conv whose output also feeds another op keeps its own quantized output: that pair is not fused; the
    same conv with ReLU6 its only user is."""
    from edgecifar.backends.pt2e import annotate_conv_relu6

    class ConvReLU6(torch.nn.Module):
        def __init__(self, also_add: bool):
            super().__init__()
            self.conv, self.also_add = torch.nn.Conv2d(3, 4, 3), also_add

        def forward(self, x):
            y = self.conv(x)
            return torch.nn.functional.relu6(y) + y if self.also_add else torch.nn.functional.relu6(y)

    config = quantizer("xnnpack")[1](is_per_channel=True)
    for also_add, pairs in ((True, 0), (False, 1)):
        graph = torch.export.export(ConvReLU6(also_add).eval(), (torch.rand(1, 3, 8, 8),)).module()
        assert annotate_conv_relu6(graph, config) == pairs


def test_the_qat_folding_pass_is_skipped_only_inside_convert():
    """calibrated() converts without torchao's conv-bn QAT folding (a no-op on prepare_pt2e graphs that costs
    30 s a file while a batch norm is left) and puts the pass back afterwards, also after an error."""
    from torchao.quantization.pt2e import quantize_pt2e

    from edgecifar.backends.pt2e import _without_qat_folding

    original = quantize_pt2e._fold_conv_bn_qat
    marker = object()
    with _without_qat_folding():
        assert quantize_pt2e._fold_conv_bn_qat(marker) is marker
    assert quantize_pt2e._fold_conv_bn_qat is original
    with pytest.raises(RuntimeError), _without_qat_folding():
        raise RuntimeError("convert failed")
    assert quantize_pt2e._fold_conv_bn_qat is original
