"""The fifth sampler, the reverse SDE by Euler-Maruyama (chapter 06's `sde_step`, `sample(..., sampler='sde')` of chapter
07), on a trained model: chapter 10's conditional model, guided, its samples judged by chapter 01's judge. Its exact
error against steps is checked on Gaussian data in chapter 07; here, that it makes the asked digits, as often as the
other stochastic sampler (strided DDPM) does at the same steps, and that it is stochastic: its step noise comes from the
seed, so a seed repeats its images and another seed changes them."""
import torch
from ddpm_course.core import class_rows, to_unit, to_uint8
from ddpm_course.data import cached_judge, classify
from ddpm_course.sampling import sample
from ddpm_course.guidance import guided
from ddpm_course.conditional import conditional_model

STEPS = 100      # Euler-Maruyama is first order and needs many steps (chapter 07's table); DDPM's step is exact in its coefficients


def judged(x, clf, y) -> float: return (classify(clf, to_uint8(to_unit(x))) == y).float().mean().item()


def test_sde_samples_are_the_asked_digits():
    d, clf, y = conditional_model(), cached_judge(), class_rows(10, 10)
    x_sde = sample(guided(d), labels=y, sampler='sde', steps=STEPS, seed=0)
    x_ddpm = sample(guided(d), labels=y, sampler='ddpm', steps=STEPS, seed=0)
    acc_sde, acc_ddpm = judged(x_sde, clf, y), judged(x_ddpm, clf, y)
    print(f"judged the asked digit at {STEPS} steps: sde {acc_sde:.0%}, ddpm {acc_ddpm:.0%}")
    assert torch.isfinite(x_sde).all() and x_sde.abs().max() <= 1
    assert acc_sde >= 0.8 and acc_sde >= acc_ddpm - 0.1


def test_sde_noise_comes_from_the_seed():
    d, y = conditional_model(), class_rows(2, 10)
    a, b, c = (sample(guided(d), labels=y, sampler='sde', steps=20, seed=s) for s in (1, 1, 2))
    assert torch.equal(a, b) and (a - c).abs().mean() > 0.05
