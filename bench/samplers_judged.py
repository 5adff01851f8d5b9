"""Every sampler of chapter 07 on a trained run, judged: for each sampler and number of steps, 100 guided samples (ten of
each digit, w = 3, the same noise for every row) read by chapter 01's judge, with the share that is the asked digit and
the seconds it took on this machine. The reverse SDE (`sde`, Euler-Maruyama, chapter 06) is first order and needs
many steps; this shows how many on a real model.

    python bench/samplers_judged.py runs/default      # after `make train`; a few minutes on a 2-core CPU
"""
import argparse, json, os, sys, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import torch
from hostinfo import cpu_name
from ddpm_course.core import class_rows, to_unit, to_uint8
from ddpm_course.data import cached_judge, classify
from ddpm_course.guidance import DEFAULT_GUIDANCE, guided
from ddpm_course.sampling import sample, model_calls
from ddpm_course.runs import load_run

CASES = [('dpmpp_2m', 10), ('ddim', 10), ('ddpm', 20), ('ddpm', 100), ('sde', 20), ('sde', 50), ('sde', 100)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('run', nargs='?', default='runs/default')
    p.add_argument('--out', default=str(ROOT/'bench'/'samplers_judged'))
    a = p.parse_args()
    d, cfg = load_run(a.run, device='cpu')
    clf, y = cached_judge(), class_rows(10, 10)
    rows = []
    for smp, steps in CASES:
        t0 = time.time(); x = sample(guided(d, DEFAULT_GUIDANCE), labels=y, sampler=smp, steps=steps, seed=0); s = time.time() - t0
        acc = (classify(clf, to_uint8(to_unit(x))) == y).float().mean().item()
        rows.append(dict(sampler=smp, steps=steps, calls=model_calls(smp, steps), judged=acc, seconds=round(s, 2)))
        print(f"{smp:9s} {steps:4d} steps: {acc:.0%} judged the asked digit, {s:.1f} s", flush=True)
    machine = f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    Path(a.out + '.json').write_text(json.dumps(dict(run=str(a.run), machine=machine, rows=rows), indent=1))
    md = [f"Samplers on `{a.run}`, 100 guided samples (w = {DEFAULT_GUIDANCE:g}, ten of each digit, seed 0), float32; judged by chapter 01's judge. "
          f"Machine: {machine}.", '', '| sampler | steps | model calls | judged the asked digit | seconds |', '|---|---:|---:|---:|---:|']
    md += [f"| {r['sampler']} | {r['steps']} | {r['calls']} | {r['judged']:.0%} | {r['seconds']:.1f} |" for r in rows]
    Path(a.out + '.md').write_text('\n'.join(md) + '\n'); print('\n'.join(md))


if __name__ == '__main__': main()
