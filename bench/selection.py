"""Choosing the default job's settings by a validation metric: one setting at a time is moved away from the default
(learning rate, EMA decay, training length), each variant trained by the command line like the default job, and every
run scored the same way: FID and KID of guided samples (--n-per-class of each digit) (DPM-Solver++(2M), 10 calls, guidance 3) in the judge's
features against the training digits, beside the real-data floor (the held-out digits against the training ones), and
the judged accuracy. The objective is compared by bench/objectives.py. Prints a table; writes bench/selection.{json,md} and
nbs/images/selection.png, which chapter 11 reads.

    python bench/selection.py               # after bench/objectives.py --data digits --lengths 6 12: 4 more runs of the default job; about 20 min on a quiet 2-core CPU
"""
import argparse, json, os, sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('MPLBACKEND', 'Agg')
import torch
from hostinfo import cpu_name, train_seconds, train_run
from ddpm_course.core import resolve_device
from ddpm_course.guidance import DEFAULT_GUIDANCE
from ddpm_course.runs import load_run
from ddpm_course.settings import TrainConfig
from ddpm_course.scoring import run_classifier
from ddpm_course.evaluation import real_features, dataset_floor, evaluate

DEFAULTS = {'lr': TrainConfig().lr, 'ema_decay': TrainConfig().ema_decay, 'epochs': 25}
SWEEP = {'lr': [3e-4, 1e-3, 3e-3], 'ema_decay': [0.99, 0.999, 0.9999], 'epochs': [6, 12, 25]}
FLAGS = {'lr': '--lr', 'ema_decay': '--ema-decay', 'epochs': '--epochs'}
SHARED = ROOT/'runs'/'objectives'/'digits'   # bench/objectives.py trains the default job and 6- and 12-epoch runs of it: the same runs, not trained twice


def shared_run(v: dict) -> Path | None:
    "The run of bench/objectives.py that is this variant (the default objective, only the epochs moved), if it has been trained"
    if (v['lr'], v['ema_decay']) != (DEFAULTS['lr'], DEFAULTS['ema_decay']): return None
    run = SHARED/f"ddpm-{'planned' if v['epochs'] == DEFAULTS['epochs'] else v['epochs']}"
    return run if (run/'latest').exists() else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--runs', default=str(ROOT/'runs'/'selection'))
    p.add_argument('--n-per-class', type=int, default=50)
    a = p.parse_args()
    device, runs = resolve_device(None), Path(a.runs)
    variants = [dict(DEFAULTS)] + [{**DEFAULTS, k: v} for k, vs in SWEEP.items() for v in vs if v != DEFAULTS[k]]
    rows, clf = [], None
    for v in variants:
        name = '-'.join(f"{k}{v[k]:g}" for k in DEFAULTS)
        run = shared_run(v)
        if run is None: run = runs/name; train_run(run, *(a for k in v for a in (FLAGS[k], v[k])))
        d, config = load_run(run, device=device)
        if clf is None:
            clf, dls = run_classifier(config, runs/'judge', device=device, verbose=False)
            f_train, f_valid = real_features(clf, dls); floor = dataset_floor(f_train, f_valid)
        r = evaluate(d, clf, f_train, [('dpmpp_2m', 10, DEFAULT_GUIDANCE)], n=a.n_per_class * 10, seed=0)[0]
        r.pop('y_pred', None)
        rows.append({**v, 'changed': next((k for k in DEFAULTS if v[k] != DEFAULTS[k]), None), 'train_seconds': train_seconds(run),
                     'fid': r['fid'], 'kid': r['kid'], 'kid_std': r['kid_std'], 'accuracy': r['accuracy']})
        print(rows[-1], flush=True)
    res = dict(machine=f"{cpu_name()}, torch {torch.__version__}", floor=floor, defaults=DEFAULTS, rows=rows, n=a.n_per_class * 10)
    (ROOT/'bench'/'selection.json').write_text(json.dumps(res, indent=1))
    lines = [f"The default job with one setting moved at a time: FID and KID of {res['n']} guided samples (DPM-Solver++(2M), 10 calls, guidance "
             f"{DEFAULT_GUIDANCE:g}) in the judge's features against the training digits; real-data floor FID {floor['fid']:.2f}. Machine: {res['machine']}.",
             '', "Training minutes are wall time on a 2-core machine that other jobs shared while some of these runs trained; every run has the same "
             "steps a epoch, so the epochs, not the minutes, measure the training.",
             '', '| setting | lr | EMA decay | epochs | training | FID | KID (x1000) | judged the asked digit |', '|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['changed'] or 'the default'} | {r['lr']:g} | {r['ema_decay']:g} | {r['epochs']} | {r['train_seconds'] / 60:.1f} min | "
                     f"{r['fid']:.2f} | {1000 * r['kid']:.1f} ± {1000 * r['kid_std']:.1f} | {r['accuracy']:.1%} |")
    (ROOT/'bench'/'selection.md').write_text('\n'.join(lines) + '\n'); print('\n'.join(lines))
    plot(res, ROOT/'nbs'/'images'/'selection.png')


def plot(res: dict, path: Path):
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
    for ax, k in zip(axs, DEFAULTS):
        x = (lambda v: 1 / (1 - v)) if k == 'ema_decay' else (lambda v: v)          # an EMA's decay as the steps it averages
        rs = sorted((r for r in res['rows'] if r['changed'] in (k, None)), key=lambda r: r[k])
        ax.plot([x(r[k]) for r in rs], [r['fid'] for r in rs], 'o-')
        ax.axvline(x(res['defaults'][k]), color='C2', ls='--', lw=1, label='the default')
        ax.axhline(res['floor']['fid'], color='k', ls=':', lw=1, label='real-data floor')
        ax.set_xscale('log'); ax.xaxis.set_minor_formatter(plt.NullFormatter()); ax.set_xticks([r[k] if k != 'ema_decay' else x(r[k]) for r in rs]); ax.set_xticklabels([f'{r[k]:g}' for r in rs])
        ax.set_xlabel('EMA decay (log of its horizon 1 / (1 - decay))' if k == 'ema_decay' else k); ax.grid(alpha=0.3, which='both'); ax.legend(fontsize=7)
    axs[0].set_ylabel('FID (judge features)'); fig.suptitle('the default job, one setting moved at a time (bench/selection.py)', fontsize=9)
    plt.tight_layout(); path.parent.mkdir(parents=True, exist_ok=True); fig.savefig(path, dpi=110)


if __name__ == '__main__': main()
