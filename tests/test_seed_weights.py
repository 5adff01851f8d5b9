"""The course's `seed` / `seed_ref` presets carry the seed's weights: same state_dict keys, same outputs.

The seed models (tests/seed_reference.py, the seed document's code kept as written) get random weights;
`load_seed_state_dict` copies them into the course's `UNet`; both run the same input in float32. They differ
only in the order of the sums (SDPA instead of `nn.MultiheadAttention`, broadcasting instead of `.repeat`),
so the outputs agree to TOL (absolute) on outputs of size about 1.
"""
import pytest
import torch

from ddpm_course.models import UNet, make_unet, load_seed_state_dict
import seed_reference as seed

TOL = 1e-4          # float32; measured differences are around 1e-6


def _pair(bottleneck, num_classes, size=32):
    torch.manual_seed(0)
    ref = (seed.UNet(bottleneck=bottleneck) if num_classes is None
           else seed.UNet_conditional(num_classes=num_classes, bottleneck=bottleneck)).eval()
    preset = 'seed' if bottleneck == 'seed' else 'seed_ref'
    ours = load_seed_state_dict(make_unet(preset, img_size=size, num_classes=num_classes), ref.state_dict()).eval()
    return ref, ours


def _inputs(size=32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, size, size, generator=g), torch.tensor([3, 950])


SIZES = {'seed': 32, 'reference': 16}   # any multiple of 8 works; small images keep the test quick on a CPU


@pytest.mark.parametrize('bottleneck', ['seed', 'reference'])
def test_unconditional(bottleneck):
    ref, ours = _pair(bottleneck, None, SIZES[bottleneck])
    x, t = _inputs(SIZES[bottleneck])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t), ref(x, t), rtol=0, atol=TOL)


@pytest.mark.parametrize('bottleneck', ['seed', 'reference'])
def test_conditional_labels_and_none(bottleneck):
    ref, ours = _pair(bottleneck, 10, SIZES[bottleneck])
    x, t = _inputs(SIZES[bottleneck])
    y = torch.tensor([0, 9])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t, y), ref(x, t, y), rtol=0, atol=TOL)
        torch.testing.assert_close(ours(x, t), ref(x, t, None), rtol=0, atol=TOL)          # y=None: the null class
        torch.testing.assert_close(ours(x, t, torch.tensor([10, 10])), ref(x, t, None), rtol=0, atol=TOL)
        assert (ours(x, t, y) - ours(x, t)).abs().max() > 1e-3                             # the label matters


def test_state_dict_keys_match():
    for bottleneck, preset in [('seed', 'seed'), ('reference', 'seed_ref')]:
        ref, ours = seed.UNet(bottleneck=bottleneck), make_unet(preset)
        assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}


def test_parameter_counts():
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(make_unet('seed')) == n(seed.UNet()) == 15_661_955
    assert n(make_unet('seed_ref')) == n(seed.UNet(bottleneck='reference')) == 23_332_739


def test_wrong_weights_are_refused():
    with pytest.raises(ValueError, match="make_unet\\('seed_ref'\\)"):
        load_seed_state_dict(make_unet('seed'), seed.UNet(bottleneck='reference').state_dict())
    with pytest.raises(ValueError, match='num_classes=10'):
        load_seed_state_dict(make_unet('seed'), seed.UNet_conditional(num_classes=10).state_dict())
    with pytest.raises(ValueError, match='num_classes=None'):
        load_seed_state_dict(make_unet('seed', num_classes=10), seed.UNet().state_dict())
    with pytest.raises(ValueError, match='no time MLP'):
        load_seed_state_dict(make_unet('small'), seed.UNet().state_dict())


def test_seed_ema_runs():
    "The fixture's EMA copies the weights for its first steps, as the seed does"
    m, ema_m = seed.UNet(), seed.UNet()
    ema = seed.EMA(0.995)
    ema.step_ema(ema_m, m)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ema_m.state_dict().values()))
