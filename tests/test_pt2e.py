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


def quantizers():
    """Each PT2E quantizer edgecifar uses that is installed here: (name, class, its config function)."""
    found = []
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                             get_symmetric_quantization_config)
        found.append(("xnnpack", XNNPACKQuantizer, get_symmetric_quantization_config))
    except ImportError:
        pass
    try:
        from litert_torch.quantize import pt2e_quantizer
        found.append(("litert", pt2e_quantizer.PT2EQuantizer, pt2e_quantizer.get_symmetric_quantization_config))
    except ImportError:
        pass
    return found


def quantize(quantizer_class, config, images):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgecifar.backends.pt2e import with_minmax_activations

    model = ConvBnReLU6().eval()
    prepared = prepare_pt2e(torch.export.export(model, (images,)).module(),
                            quantizer_class().set_global(with_minmax_activations(config(is_per_channel=True))))
    with torch.no_grad():
        prepared(images)
        return model, convert_pt2e(prepared)


@pytest.mark.parametrize("name, quantizer_class, config", quantizers(), ids=lambda v: v if isinstance(v, str) else "")
def test_conv_and_relu6_are_quantized_as_one_op(name, quantizer_class, config):
    from edgecifar.backends.pt2e import quantizer_with_fused_relu6

    images = torch.rand(16, 3, 8, 8)
    model, plain = quantize(quantizer_class, config, images)
    _, fused = quantize(quantizer_with_fused_relu6(quantizer_class), config, images)

    def relu6_inputs(graph):
        return [str(n.args[0].target) for n in graph.graph.nodes
                if "relu6" in str(n.target) or "hardtanh" in str(n.target)]

    assert all("conv" in t for t in relu6_inputs(fused))
    assert all("dequantize" in t for t in relu6_inputs(plain))  # the quantizer alone: the conv output is quantized
    output_scales = [float(n.args[1]) for n in fused.graph.nodes
                     if "quantize_per_tensor" in str(n.target) and "dequantize" not in str(n.target)]
    assert max(output_scales) <= 6.0 / 255 * 1.001  # the input and both ReLU6 outputs: [0, 6] in 8 bits at most
    with torch.no_grad():
        want = model(images)
        error_fused, error_plain = ((m(images) - want).abs().mean().item() for m in (fused, plain))
    assert error_fused < error_plain / 1.5, (error_fused, error_plain)  # measured: 0.013 against 0.026
