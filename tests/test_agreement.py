"""What a model predicts (eps, x0 or v) travels with it. Three tiny conditional models, one per prediction type, are
trained for a few epochs; their samples taken through every public entry point (the in-training grid, the Python API,
the `ddpm_course sample` command, `evaluate`'s sample sets) must be the same images, and must be digits that the judge
recognises. The same network sampled as if it predicted something else must not pass: that was the bug of sampling a
v-model as an eps-model, which no shape check sees."""
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import Tensor
from dataclasses import asdict
from functools import cache
from safetensors.torch import save_file, load_file
from conftest import run_shell
from ddpm_course.data import load_images, classify, cached, cached_judge, source_key
from ddpm_course.core import class_rows, to_unit, to_uint8
from ddpm_course.diffusion import Diffusion
from ddpm_course.sampling import sample
from ddpm_course.guidance import guided
from ddpm_course.runs import load_run
from ddpm_course.settings import TrainConfig
from ddpm_course.trainer import train, TRAINING_MODULES
from ddpm_course.evaluation import sample_set

PRED_TYPES = ('eps', 'x0', 'v')
SAMPLER, STEPS, SEED = 'ddim', 50, 0          # the run's own grids' sampler (DDIM, min(50, T) steps, the run's seed); every entry point below asks for it explicitly
# The bars, from measurements of these 8-epoch tiny models with DDIM-20:
# x0 99.5% and v 99.5% judged the asked digit; eps 38% (and 48% with the full DDPM chain: at this budget an eps-model on
# the cosine schedule is the weakest of the three, and deterministic DDIM from the noisiest step amplifies its error,
# chapter 07). Chance is 10%.
ACC_BAR = {'x0': 0.9, 'v': 0.9, 'eps': 0.25}
# Pixel statistics: the real digits have 3.8% of their pixels above 0.9; these models' samples 6-9%. A model sampled as
# the wrong type (the old bug) gives 22-61% there: salt and pepper.
JUDGE_STEPS = 20                            # the judged samples below: DDIM-20, as the bars were measured
SATURATED_BAR = 4                           # at most 4x the real digits' fraction of pixels above 0.9

def saturated(x): return (x > 0.9).float().mean().item()


@pytest.fixture(scope='module')
def judge():
    clf = cached_judge()                        # chapter 01's judge
    assert clf.valid_accuracy >= 0.97
    return clf


@cache
def trained(pt: str):
    "(run folder, the in-training grid of its last epoch) of the tiny model that predicts `pt`: trained once for every worker (chapter 01's cache)"
    cfg = TrainConfig(preset='tiny', conditional=True, pred_type=pt, T=100, epochs=8, bs=32, lr=3e-3, wandb='off', seed=SEED, sample_every=100, n_samples=10)
    def make(folder):
        learn = train(cfg, folder/'run', quiet=True, device='cpu')                  # its one grid, after the last epoch: DDIM-50, guided
        save_file({'grid': learn.run_parts.samples.grids[-1][1].contiguous()}, folder/'grid.safetensors')
    folder = cached(f'test-agreement-{pt}', make, asdict(cfg), SAMPLER, STEPS, SEED, source_key(*(f'ddpm_course.{m}' for m in TRAINING_MODULES)))
    return folder/'run', load_file(folder/'grid.safetensors')['grid']


@pytest.mark.parametrize('pt', PRED_TYPES)
def test_every_entry_point_gives_the_same_samples(pt, tmp_path, monkeypatch, capsys):
    run, grid = trained(pt)
    d, cfg = load_run(run, device='cpu')
    assert d.pred_type == pt == cfg['train']['pred_type']
    y = class_rows(10, 1)
    api = to_unit(sample(guided(d), labels=y, sampler=SAMPLER, steps=STEPS, seed=SEED))         # the Python API, default guidance
    torch.testing.assert_close(api, grid, rtol=0, atol=1e-6)                       # == the grid written during training
    ev, ey = sample_set(d, 10, sampler=SAMPLER, steps=STEPS, seed=SEED)             # evaluate's sample set
    torch.testing.assert_close(ev, api, rtol=0, atol=1e-6); assert torch.equal(ey, y)
    npz = tmp_path/'s.npz'
    code, out = run_shell(['sample', '--run', run, '--per-class', '1', '--sampler', SAMPLER, '--steps', STEPS, '--seed', SEED,   # the command line, as
                           '--out', tmp_path/'s.png', '--npz', npz, '--device', 'cpu', '--precision', 'fp32'], monkeypatch, capsys)  # its script runs it
    assert code == 0, out
    z = np.load(npz)
    assert np.array_equal(z['images'], to_uint8(api).permute(0, 2, 3, 1).numpy())  # the command line, bit for bit in uint8
    assert z['labels'].tolist() == y.tolist()


@pytest.fixture(scope='module')
def real_saturated():
    return saturated(load_images('digits')[0].float() / 255)


@cache
def judged_samples(pt: str) -> tuple[Tensor, Tensor]:
    "200 guided samples of the `pt` model (DDIM-20, as the bars were measured), 20 of each digit, and their labels: drawn once for the two tests below"
    d, _ = load_run(trained(pt)[0], device='cpu')
    y = class_rows(10, 20)
    return to_unit(sample(guided(d), labels=y, sampler=SAMPLER, steps=JUDGE_STEPS, seed=1)), y


@pytest.mark.parametrize('pt', PRED_TYPES)
def test_samples_are_the_asked_digits(judge, real_saturated, pt):
    x, y = judged_samples(pt)
    acc = (classify(judge, x) == y).float().mean().item()
    print(f"{pt}: {acc:.1%} of 200 guided samples judged the asked digit; {saturated(x):.1%} of pixels above 0.9 (real {real_saturated:.1%})")
    assert acc >= ACC_BAR[pt], f"{pt}-model: only {acc:.1%} of its samples are the asked digit"
    assert saturated(x) < SATURATED_BAR * real_saturated, f"{pt}-model: {saturated(x):.1%} of its pixels are saturated"


@pytest.mark.parametrize('pt, wrong', [('v', 'eps'), ('x0', 'eps'), ('eps', 'x0')])
def test_a_model_read_as_the_wrong_type_fails(judge, real_saturated, pt, wrong):
    "The same network declared as another type: the checks above catch it (this was the old bug: a v-model sampled as eps)"
    d, _ = load_run(trained(pt)[0], device='cpu')
    x_right, y = judged_samples(pt)
    right = (classify(judge, x_right) == y).float().mean().item()
    x = to_unit(sample(guided(Diffusion(d.net, d.sched, wrong)), labels=y, sampler=SAMPLER, steps=JUDGE_STEPS, seed=1))
    acc = (classify(judge, x) == y).float().mean().item()
    print(f"a {pt}-model sampled as {wrong}: {acc:.1%} judged right (read correctly: {right:.1%}), {saturated(x):.1%} saturated")
    assert saturated(x) >= SATURATED_BAR * real_saturated and acc < right
