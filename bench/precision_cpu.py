"""Sampling in bf16 or fp32 on this CPU: speed and what the samples are worth, side by side in one run.

On a CPU with bf16 matrix instructions (`avx512_bf16` or `amx_bf16` in /proc/cpuinfo) `precision='auto'` could mean
bf16 for sampling too. This measures whether it should: the default run's model (runs/default, `make train`), the default
sampler (DPM-Solver++(2M), 10 calls, guidance 3), timed at several batch sizes in both precisions, interleaved; then
500 samples (50 per digit) from the same noise in both, judged by chapter 01's classifier, with the distance between the
two precisions' images. Where the CPU lacks the instructions bf16 is emulated (slow); the table says which it was.

    .venv/bin/python bench/precision_cpu.py --run runs/default --out bench/precision_cpu.md
"""
import argparse, json, os, platform, sys, time
from pathlib import Path
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ddpm_course.data import get_dls, train_classifier, classify                                 # noqa: E402
from ddpm_course.core import to_unit, to_uint8, class_rows                                      # noqa: E402
from ddpm_course.machine import autocast_for, cpu_has_bf16                                      # noqa: E402
from ddpm_course.runs import load_run                                                            # noqa: E402
from ddpm_course.sampling import sample                                                          # noqa: E402
from ddpm_course.guidance import guided                                                          # noqa: E402
from fastai.torch_core import set_seed                                                           # noqa: E402


def timed(d, n, prec, reps):
    y = torch.arange(n) % 10
    ts = []
    for r in range(reps):
        t0 = time.perf_counter()
        with autocast_for(d.device, prec): sample(guided(d), labels=y, seed=r)     # guidance DEFAULT_GUIDANCE (3)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run', default=str(ROOT/'runs'/'default'))
    p.add_argument('--batches', type=int, nargs='+', default=[1, 10, 100])
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--per-class', type=int, default=50)
    p.add_argument('--out', default=None)
    a = p.parse_args()
    d, _ = load_run(a.run, device='cpu')
    for prec in ('fp32', 'bf16'): timed(d, 4, prec, 1)                     # warm-up: first calls allocate
    speed = {}
    for n in a.batches:
        for prec in ('fp32', 'bf16'): speed.setdefault(n, {})[prec] = timed(d, n, prec, a.reps)
        print(f"batch {n}: fp32 {speed[n]['fp32']:.3f} s, bf16 {speed[n]['bf16']:.3f} s", file=sys.stderr)
    set_seed(0); judge = train_classifier(get_dls('digits', bs=128, device='cpu'), epochs=8)
    y = class_rows(10, a.per_class); xs = {}
    for prec in ('fp32', 'bf16'):
        with autocast_for(d.device, prec): x = sample(guided(d), labels=y, seed=123, bs=100)
        xs[prec] = to_unit(x)
    acc = {k: (classify(judge, x) == y).float().mean().item() for k, x in xs.items()}
    lv = (to_uint8(xs['fp32']).int() - to_uint8(xs['bf16']).int()).abs()
    dist = dict(max_abs=(xs['fp32'] - xs['bf16']).abs().max().item() * 2, mean_abs=(xs['fp32'] - xs['bf16']).abs().mean().item() * 2,
                levels_max=int(lv.max()), share_moved=(lv > 0).float().mean().item(), share_over_8=(lv > 8).float().mean().item())
    native = cpu_has_bf16()
    lines = [f"Sampling the default run (DPM-Solver++(2M), 10 calls, guidance 3) on this CPU: {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 {'native' if native else 'EMULATED (no avx512_bf16/amx_bf16)'}; "
             f"median of {a.reps} runs, the two precisions interleaved.", '',
             '| images per call | fp32 s | bf16 s | bf16 speed-up |', '|---|---|---|---|']
    for n, s in speed.items(): lines.append(f"| {n} | {s['fp32']:.3f} | {s['bf16']:.3f} | {s['fp32'] / s['bf16']:.2f}x |")
    lines += ['', f"{len(y)} samples ({a.per_class} per digit) from the same noise in each precision, judged by chapter 01's classifier "
                  f"(valid accuracy {judge.valid_accuracy:.1%}):", '', '| | fp32 | bf16 |', '|---|---|---|',
              f"| judged the asked digit | {acc['fp32']:.1%} | {acc['bf16']:.1%} |", '',
              f"Distance between the two, in [-1, 1]: largest {dist['max_abs']:.3f}, mean {dist['mean_abs']:.4f}; in uint8 levels: largest "
              f"{dist['levels_max']}, {dist['share_moved']:.1%} of pixels moved, {dist['share_over_8']:.2%} by more than 8 levels."]
    table = '\n'.join(lines); print(table)
    if a.out:
        Path(a.out).write_text(table + '\n')
        Path(a.out).with_suffix('.json').write_text(json.dumps(dict(speed=speed, accuracy=acc, distance=dist, native_bf16=native), indent=1))


if __name__ == '__main__': main()
