"""Each sampler of chapter 07 on a trained model: one row of digits 0-9 per sampler and number of model calls (5, 10
and 20), every row from the same starting noise and the same labels, guided (classifier-free guidance w = 3, chapter 09),
float32 on the CPU. Writes nbs/images/samplers_default.png, which chapter 07 shows beside its exact-ODE table, and
bench/samplers_grid.json: each row's RMS distance (pixels in [-1, 1]) from DPM-Solver++(2M) at 100 calls from the same
noise (not drawn), a stand-in for the end of the probability-flow ODE.

    python bench/samplers_grid.py runs/default          # after `make train`; a few seconds on a 2-core CPU
"""
import argparse, json, os, sys, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('MPLBACKEND', 'Agg')
import numpy as np
import torch
import matplotlib.pyplot as plt
from ddpm_course.core import image_grid
from ddpm_course.guidance import DEFAULT_GUIDANCE, guided
from ddpm_course.sampling import sample, model_calls, start_noise
from ddpm_course.runs import load_run

SAMPLERS = [('ddim', 'DDIM'), ('dpmpp_2m', 'DPM-Solver++(2M)'), ('heun', 'Heun (karras)'), ('ddpm', 'strided DDPM')]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('run', nargs='?', default='runs/default', help='a run folder of `make train` (default: runs/default)')
    p.add_argument('--calls', type=int, nargs='+', default=[5, 10, 20])
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--ref-calls', type=int, default=100, help="DPM-Solver++(2M) at this many calls: the rows' reference")
    p.add_argument('--image', default=str(ROOT/'nbs'/'images'/'samplers_default.png'))
    p.add_argument('--out', default=str(ROOT/'bench'/'samplers_grid.json'))
    a = p.parse_args()
    t0 = time.time()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    d, cfg = load_run(a.run, device='cpu')
    labels = torch.arange(d.num_classes)                                   # one digit of each class per row
    x_T = start_noise((len(labels), *d.shape), torch.Generator().manual_seed(a.seed))   # the same noise in every row
    g = guided(d, DEFAULT_GUIDANCE)
    rows, names = [], []
    for smp, name in SAMPLERS:
        for c in a.calls:
            rows.append(sample(g, labels=labels, sampler=smp, steps=c, x_T=x_T, seed=a.seed))   # ddpm: the same step noise too
            names.append(f"{name}, {model_calls(smp, c)} calls")
    grid = np.asarray(image_grid(torch.cat(rows), nrow=len(labels), pad=2))
    side = grid.shape[1] / len(labels)                                    # pixels per image with its padding
    fig, ax = plt.subplots(figsize=(6.4, 0.55 * len(rows) + 0.6))
    ax.imshow(grid, cmap='gray', vmin=0, vmax=255)
    ax.set_xticks([side * (i + 0.5) for i in range(len(labels))]); ax.set_xticklabels([str(int(y)) for y in labels])
    ax.set_yticks([side * (i + 0.5) for i in range(len(rows))]); ax.set_yticklabels(names, fontsize=8)
    ax.tick_params(length=0); ax.xaxis.tick_top()
    for i in range(len(a.calls), len(rows), len(a.calls)): ax.axhline(side * i, color='C3', lw=1.5)
    ax.set_title(f"{Path(a.run).parent.name}/{Path(a.run).name}: guidance {DEFAULT_GUIDANCE:g}, the same noise in every row (seed {a.seed}); the asked digit above each column",
                 fontsize=8, pad=18)
    plt.tight_layout()
    Path(a.image).parent.mkdir(parents=True, exist_ok=True); fig.savefig(a.image, dpi=100, bbox_inches='tight')
    ref = sample(g, labels=labels, sampler='dpmpp_2m', steps=a.ref_calls, x_T=x_T)
    rms = {nm: (r - ref).pow(2).mean().sqrt().item() for nm, r in zip(names, rows)}
    for nm, v in rms.items(): print(f"{nm:30s} RMS from {SAMPLERS[1][1]}-{a.ref_calls}: {v:.3f}")
    Path(a.out).write_text(json.dumps(dict(run=f"{Path(a.run).parent.name}/{Path(a.run).name}", guidance=DEFAULT_GUIDANCE, seed=a.seed,
                                           reference=f"{SAMPLERS[1][1]}, {a.ref_calls} calls", rms=rms, seconds=time.time() - t0), indent=1))
    print(f"{a.run}: {len(rows)} rows of {len(labels)} in {time.time() - t0:.1f} s; wrote {a.image} and {a.out}")


if __name__ == '__main__': main()
