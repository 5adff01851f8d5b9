"""bf16, as the command line and the service run the network where the hardware has it (`--precision auto`, chapter 17),
against float32, as `sample` from Python runs it: on chapter 10's conditional model, the same noise and labels, the
judge reads the samples as the asked digit as often in both, and the images differ by a few uint8 levels. bf16 is
emulated (slow) on a CPU without the instructions, so 100 small samples keep this short everywhere."""
import torch
from ddpm_course.core import class_rows, to_unit, to_uint8
from ddpm_course.data import cached_judge, classify
from ddpm_course.sampling import sample
from ddpm_course.guidance import guided
from ddpm_course.machine import autocast_for
from ddpm_course.conditional import conditional_model


def test_bf16_samples_are_fp32s_within_a_few_levels_and_judged_alike():
    d, clf, y = conditional_model(), cached_judge(), class_rows(10, 10)
    x32 = sample(guided(d), labels=y, seed=0)
    with autocast_for('cpu', 'bf16'): x16 = sample(guided(d), labels=y, seed=0)
    u32, u16 = to_uint8(to_unit(x32)), to_uint8(to_unit(x16))
    lv = (u32.int() - u16.int()).abs().float()
    acc32, acc16 = ((classify(clf, u32) == y).float().mean().item(), (classify(clf, u16) == y).float().mean().item())
    print(f"judged the asked digit: fp32 {acc32:.0%}, bf16 {acc16:.0%}; uint8 levels apart: mean {lv.mean():.2f}, "
          f"99th percentile {lv.flatten().quantile(0.99):.0f}, largest {lv.max():.0f}")
    assert acc32 >= 0.8 and abs(acc16 - acc32) <= 0.05
    assert lv.mean() < 1 and lv.flatten().quantile(0.99) <= 6      # (measured on an AVX-512 BF16 CPU: 0.46, 2; largest 4)
    assert not torch.equal(u32, u16)          # (bf16 did run: the bits differ)
