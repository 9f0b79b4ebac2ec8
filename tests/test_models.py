import pytest
import torch

from lewc.core.errors import LewcError
from lewc.models import build


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_resnet20_option_a_parameter_count_is_the_classic_0_27m():
    assert n_params(build("resnet20a", 1, 10, (3, 32, 32), norm="bn")) == 269_722
    assert n_params(build("resnet20a", 1, 10, (3, 32, 32), norm="bn", bias=False)) == 269_712


def test_resnet20_default_has_projection_shortcuts_21_convolutions():
    model = build("resnet20", 1, 10, (3, 32, 32), norm="bn")
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 21  # 19 + 2 projections
    # each projection: a 1×1 conv (16·32, 32·64 weights) + BN (2 × channels)
    assert n_params(model) == 269_722 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_field_standard_widths_in_units():
    from lewc.models import width_label

    assert [lin.out_features for lin in build("mlp", 1, 10, (1, 28, 28)).linears] == [512] * 3
    assert [lin.out_features for lin in build("mlp", 16, 10, (1, 28, 28)).linears] == [8192] * 3
    assert width_label("mlp", 16) == "MLP ×16 (3×8192)"
    assert width_label("resnet20", 32) == "ResNet-20 ×32 (512/1024/2048 ch)"
    assert width_label("vgg11", 16) == "VGG-11 ×16 (1024…8192 ch)"


@pytest.mark.parametrize("name", ["vgg11", "resnet20"])
def test_parameter_count_scales_with_width_squared(name):
    shape = (3, 32, 32)
    p1, p4 = (n_params(build(name, w, 10, shape)) for w in (1, 4))
    # hidden×hidden weights dominate: the ratio approaches 16 from below (first/last layers are linear in width)
    assert 8 < p4 / p1 <= 16


@pytest.mark.parametrize("name", ["mlp", "vgg11", "vgg16", "resnet20"])
@pytest.mark.parametrize("norm", ["bn", "ln", "none"])
def test_every_declared_layer_is_reached_in_order(name, norm):
    model = build(name, 1, 10, (1, 28, 28), norm=norm, base_width=8).eval()
    specs = model.layers()
    calls = []
    hooks = [s.weight_module.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, s in enumerate(specs)]
    logits, records = model(torch.randn(3, 1, 28, 28), capture=True)
    for h in hooks:
        h.remove()
    assert len(records) == len(specs)
    assert calls == sorted(calls) and set(calls) == set(range(len(specs)))
    depths = [s.depth for s in specs]
    assert depths == sorted(depths) and depths[0] == 1 and len(set(depths)) == len(depths)
    assert torch.equal(records[-1][1], logits) and torch.equal(records[-1][2], logits)
    for spec, (_, pre, out) in zip(specs, records, strict=True):
        assert torch.equal(out, torch.relu(pre) if spec.activation == "relu" else pre)
    assert logits.shape == (3, 10)
    assert torch.equal(model(torch.zeros(2, 1, 28, 28)), model(torch.zeros(2, 1, 28, 28), capture=True)[0])


def test_resnet_depths_count_the_longest_path():
    depths = [s.depth for s in build("resnet20", 1, 10, (3, 32, 32)).layers()]
    assert depths == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 20]


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"width": -2}, {"norm": "gn"}, {"name": "resnet56"}])
def test_bad_model_arguments_are_one_line_errors(kwargs):
    args = {"name": "mlp", "width": 1, "num_classes": 10, "in_shape": (1, 28, 28)} | kwargs
    with pytest.raises(LewcError):
        build(**args)
