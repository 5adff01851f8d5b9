"""The default objective (DDPM: v-prediction on the cosine schedule) against flow matching (the straight path's
velocity, chapter 12), side by side: the same UNet, the same training steps and batch, the same judge. For each
dataset, each objective is trained by the command line (`ddpm_course train --objective ...`, otherwise the planned
recipe of the dataset) and scored with chapter 21's judge of that dataset: FID, KID and judged accuracy against model
calls (5, 10, 20, 50) for DDIM and DPM-Solver++(2M) (for a flow model DDIM is Euler's method in flow time), all from the
same noise. With --lengths, shorter runs of each objective (whole one-cycle runs of fewer epochs) give quality against
training time. Prints tables; writes bench/objectives_DATA.{json,md} and nbs/images/objectives_DATA.png.

    python bench/objectives.py --data digits --lengths 6 12        # the default job and 6- and 12-epoch runs; ~35 min on 2 cores
    python bench/objectives.py --data letters                       # EMNIST letters, the real-data recipe; about an hour on 2 cores
"""
import argparse, json, os, subprocess, sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('MPLBACKEND', 'Agg')
import torch
from hostinfo import cpu_name, train_run
from ddpm_course.core import resolve_device
from ddpm_course.guidance import DEFAULT_GUIDANCE
from ddpm_course.sampling import model_calls
from ddpm_course.runs import load_run
from ddpm_course.scoring import run_classifier
from ddpm_course.evaluation import real_features, dataset_floor, evaluate

OBJECTIVES = ('ddpm', 'flow')
LABELS = {'ddim': 'DDIM (Euler for flow)', 'dpmpp_2m': 'DPM-Solver++(2M)'}


def folder_of_letters(n: int = 60_000) -> Path:
    "The EMNIST letters as a folder of PNGs (bench/npz_to_folder.py), made once"
    out = Path('/tmp')/f'emnist{n // 1000}k'
    if not out.exists():
        subprocess.run([sys.executable, str(ROOT/'bench'/'npz_to_folder.py'), str(ROOT.parent/'shared'/'data'/'emnist_letters_train.npz'),
                        str(out), '--n', str(n)], check=True)
    return out


def score(run: Path, judge_dir: Path, samplers, calls, n_per_class: int, seed: int = 0) -> tuple[list[dict], dict]:
    "(rows of FID, KID, accuracy by sampler and calls, the real-data floor) of a run, in its dataset's judge's features"
    device = resolve_device(None)
    d, config = load_run(run, device=device)
    clf, dls = run_classifier(config, judge_dir, device=device, verbose=False)
    f_train, f_valid = real_features(clf, dls)
    w = DEFAULT_GUIDANCE if d.conditional else 1.
    rows = evaluate(d, clf, f_train, [(s, c, w) for s in samplers for c in calls], n=n_per_class * dls.c, seed=seed, verbose=True)
    for r in rows: r['calls'] = model_calls(r['sampler'], r['steps']); r.pop('y_pred', None)
    return rows, dataset_floor(f_train, f_valid)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', choices=['digits', 'letters'], default='digits')
    p.add_argument('--lengths', type=int, nargs='*', default=[], help="epochs of shorter runs, for quality against training time")
    p.add_argument('--calls', type=int, nargs='+', default=[5, 10, 20, 50])
    p.add_argument('--samplers', nargs='+', default=['ddim', 'dpmpp_2m'])
    p.add_argument('--n-per-class', type=int, default=None, help="samples per class for each setting (default: 50 digits, 20 letters)")
    p.add_argument('--runs', default=str(ROOT/'runs'/'objectives'), help="where the runs are trained (kept: a second call scores them again)")
    a = p.parse_args()
    dataset = None if a.data == 'digits' else str(folder_of_letters())
    npc = a.n_per_class or (50 if a.data == 'digits' else 20)
    base, res = Path(a.runs)/a.data, {'data': a.data, 'machine': f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}", 'runs': []}
    for objective in OBJECTIVES:
        for epochs in [None, *a.lengths]:
            run = base/f"{objective}-{epochs or 'planned'}"
            secs = train_run(run, '--objective', objective, *(['--dataset', dataset] if dataset else []), *(['--epochs', epochs] if epochs else []))
            full = epochs is None
            rows, floor = score(run, base/'judge', a.samplers if full else ['dpmpp_2m'], a.calls if full else [20], npc)
            res['floor'] = floor
            res['runs'].append(dict(objective=objective, epochs=load_run(run)[1]['plan']['epochs'], planned=full, train_seconds=secs, rows=rows))
            print(f"{objective} {epochs or 'planned'}: trained {secs:.0f} s", flush=True)
    out = ROOT/'bench'/f'objectives_{a.data}'
    out.with_suffix('.json').write_text(json.dumps(res, indent=1))
    write_table(res, out.with_suffix('.md'), npc)
    plot(res, ROOT/'nbs'/'images'/f'objectives_{a.data}.png')


def plot(res: dict, path: Path):
    "FID and judged accuracy against model calls, each objective with each sampler (the planned runs)"
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in (r for r in res['runs'] if r['planned']):
        for s, ls in (('ddim', '--'), ('dpmpp_2m', '-')):
            rows = sorted((x for x in r['rows'] if x['sampler'] == s), key=lambda x: x['calls'])
            if not rows: continue
            lab = f"{r['objective']}, {LABELS.get(s, s)}"
            axs[0].plot([x['calls'] for x in rows], [x['fid'] for x in rows], 'o' + ls, label=lab)
            axs[1].plot([x['calls'] for x in rows], [100 * x.get('accuracy', float('nan')) for x in rows], 'o' + ls, label=lab)
    res_calls = sorted({x['calls'] for r in res['runs'] if r['planned'] for x in r['rows']})
    axs[1].set_ylim(top=101)                                          # (a share: no tick above 100%)
    axs[0].axhline(res['floor']['fid'], color='k', ls=':', label='real-data floor')
    for ax, lab in zip(axs, ['FID (judge features)', 'judged the asked class (%)']):
        ax.set_xscale('log'); ax.xaxis.set_minor_formatter(plt.NullFormatter()); ax.set_xticks(res_calls, [str(c) for c in res_calls]); ax.set_xlabel('model calls per sample'); ax.set_ylabel(lab); ax.grid(alpha=0.3, which='both'); ax.legend(fontsize=7)
    fig.suptitle(f"ddpm against flow matching on {res['data']} ({res['machine']})", fontsize=9); plt.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True); fig.savefig(path, dpi=110)


def write_table(res: dict, path: Path, npc: int):
    "The tables: quality against model calls (the planned runs), and against training time (all runs, DPM-Solver++(2M), 20 calls)"
    lines = [f"Objectives side by side on {res['data']}: the same UNet, steps and batch; {npc} samples per class a setting, guidance "
             f"{DEFAULT_GUIDANCE:g}, the same noise; FID and KID in the dataset's judge's features; real-data floor FID {res['floor']['fid']:.2f}. "
             f"Machine: {res['machine']}.", '', '| objective | sampler | model calls | FID | KID (x1000) | judged the asked class |', '|---|---|---:|---:|---:|---:|']
    for r in res['runs']:
        if not r['planned']: continue
        for row in r['rows']:
            lines.append(f"| {r['objective']} | {LABELS.get(row['sampler'], row['sampler'])} | {row['calls']} | {row['fid']:.2f} | {1000 * row['kid']:.1f} | {row.get('accuracy', float('nan')):.1%} |")
    lines += ['', "Quality against training length. A step costs the same for both objectives (the same UNet, batch and data; only the "
              "regression target differs), so the epochs are the fair axis; the minutes are wall time on a 2-core machine that other jobs "
              "shared while these runs trained, and overstate a quiet machine's time.",
              '', '| objective | epochs | training time | FID (DPM-Solver++(2M), 20 calls) | judged the asked class |', '|---|---:|---:|---:|---:|']
    for r in sorted(res['runs'], key=lambda r: (r['objective'], r['train_seconds'])):
        row = next(x for x in r['rows'] if x['sampler'] == 'dpmpp_2m' and x['calls'] == 20)
        lines.append(f"| {r['objective']} | {r['epochs']} | {r['train_seconds'] / 60:.1f} min | {row['fid']:.2f} | {row.get('accuracy', float('nan')):.1%} |")
    path.write_text('\n'.join(lines) + '\n'); print('\n'.join(lines))


if __name__ == '__main__': main()
