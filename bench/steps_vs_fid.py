"""Steps against quality on a trained run: FID, KID and class accuracy against the number of model calls, for DDIM,
DPM-Solver++(2M) and Heun (chapter 07), every setting sampled from the same noise and judged by the run's classifier
(chapter 21). Prints a table, writes bench/steps_vs_fid.{json,md} and nbs/images/steps_vs_fid.png, and names the fewest
calls that match DDIM-100's FID: within the spread of DDIM-100's FID over two seeds of its noise.

    python bench/steps_vs_fid.py --run runs/default            # after `make train`; about 20 min on a 2-core CPU
"""
import argparse, json, os, sys, time, platform
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('MPLBACKEND', 'Agg')
import torch
import matplotlib.pyplot as plt
from ddpm_course.core import resolve_device
from ddpm_course.guidance import DEFAULT_GUIDANCE
from ddpm_course.sampling import model_calls
from ddpm_course.runs import load_run
from ddpm_course.scoring import run_classifier
from ddpm_course.evaluation import real_features, dataset_floor, evaluate, format_rows

LABELS = {'ddim': 'DDIM', 'dpmpp_2m': 'DPM-Solver++(2M)', 'heun': 'Heun (Karras)'}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run', default='runs/default')
    p.add_argument('--samplers', nargs='+', default=['ddim', 'dpmpp_2m', 'heun'])
    p.add_argument('--calls', type=int, nargs='+', default=[5, 10, 20, 50, 100])
    p.add_argument('--n-per-class', type=int, default=50)
    p.add_argument('--out', default=str(ROOT/'bench'/'steps_vs_fid'))
    p.add_argument('--image', default=str(ROOT/'nbs'/'images'/'steps_vs_fid.png'))
    a = p.parse_args()
    t_start, device = time.time(), resolve_device(None)
    d, config = load_run(a.run, device=device)
    clf, dls = run_classifier(config, Path(a.run)/'eval', device=device, verbose=True)
    f_train, f_valid = real_features(clf, dls)
    floor = dataset_floor(f_train, f_valid)
    n = a.n_per_class * dls.c
    w = DEFAULT_GUIDANCE if d.conditional else 1.
    settings = [(s, c, w) for s in a.samplers for c in a.calls]
    rows = evaluate(d, clf, f_train, settings, n=n, seed=0, verbose=True)
    ref2 = evaluate(d, clf, f_train, [('ddim', max(a.calls), w)], n=n, seed=1, verbose=True)[0]   # the noise of FID: another seed
    for r in rows + [ref2]: r['calls'] = model_calls(r['sampler'], r['steps']); r.pop('y_pred', None)
    ref = next(r for r in rows if r['sampler'] == 'ddim' and r['steps'] == max(a.calls))
    spread = abs(ref['fid'] - ref2['fid'])
    bar = max(ref['fid'], ref2['fid'])
    match = sorted((r for r in rows if r['fid'] <= bar), key=lambda r: (r['calls'], r['fid']))[0]
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, {device}"
    res = dict(run=a.run, machine=machine, n=n, guidance=w, floor=floor, rows=rows, ddim_ref_seed1=ref2, fid_spread=spread,
               bar=bar, fewest_calls_matching=dict(sampler=match['sampler'], steps=match['steps'], calls=match['calls'], fid=match['fid']),
               seconds=time.time() - t_start)
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix('.json').write_text(json.dumps(res, indent=1))
    lines = [f"Steps against quality: {a.run}, {n} samples per setting ({a.n_per_class} per class), guidance {w:g}, the same noise for every setting; "
             f"FID and KID in the run judge's features, accuracy = the judge reads the asked class. Machine: {machine}.", '',
             f"| sampler | model calls | FID | KID (x1000) | accuracy | seconds |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {LABELS.get(r['sampler'], r['sampler'])} | {r['calls']} | {r['fid']:.2f} | {1000 * r['kid']:.2f} ± {1000 * r['kid_std']:.2f} | "
                     f"{r.get('accuracy', float('nan')):.1%} | {r['seconds']:.0f} |")
    lines += ['', f"Real-data floor (training vs held-out images): FID {floor['fid']:.2f}. DDIM-{max(a.calls)} with another seed of its noise: "
              f"FID {ref2['fid']:.2f} (spread {spread:.2f}). The fewest calls whose FID is at most {bar:.2f}, the worse of DDIM-{max(a.calls)}'s two: "
              f"**{LABELS.get(match['sampler'], match['sampler'])}, {match['calls']} calls** (FID {match['fid']:.2f}). Took {res['seconds'] / 60:.0f} min."]
    out.with_suffix('.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.6))
    for s in a.samplers:
        rs = [r for r in rows if r['sampler'] == s]
        axs[0].plot([r['calls'] for r in rs], [r['fid'] for r in rs], 'o-', label=LABELS.get(s, s))
        if d.conditional: axs[1].plot([r['calls'] for r in rs], [100 * r['accuracy'] for r in rs], 'o-', label=LABELS.get(s, s))
    axs[0].axhline(floor['fid'], color='k', ls=':', label='real-data floor'); axs[0].axhspan(min(ref['fid'], ref2['fid']), bar, color='C0', alpha=0.15, label=f'DDIM-{max(a.calls)}, two seeds')
    for ax, lab in zip(axs, ['FID (judge features)', 'judged the asked class (%)']):
        ax.set_xscale('log'); ax.set_xlabel('model calls per sample'); ax.set_ylabel(lab); ax.grid(alpha=0.3, which='both'); ax.legend(fontsize=7)
    axs[0].set_yscale('log')
    fig.suptitle(f'steps against quality, {a.run} ({n} samples a setting, guidance {w:g})', fontsize=10); plt.tight_layout()
    Path(a.image).parent.mkdir(parents=True, exist_ok=True); fig.savefig(a.image, dpi=110)
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')} and {a.image}")


if __name__ == '__main__': main()
