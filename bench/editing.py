"""Inpainting and SDEdit on a trained run, judged (chapter 13): the top halves of the held-out images completed by
RePaint without a label and with the true one, read by the run's judge (chapter 21), against the real images, the top
halves alone and guessing; then held-out images of one class redrawn as another by SDEdit, by strength. Prints the
tables, writes bench/editing.{json,md} and two pictures, nbs/images/inpaint_default.png and nbs/images/sdedit_default.png.

    python bench/editing.py --run runs/default        # after `make train`; about 5 min on a 2-core CPU
"""
import argparse, json, os, sys, time, platform
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault('MPLBACKEND', 'Agg')
import torch
from ddpm_course.core import resolve_device, to_unit, save_grid
from ddpm_course.data import classify
from ddpm_course.runs import load_run
from ddpm_course.sampling import DEFAULT_SAMPLER, DEFAULT_STEPS
from ddpm_course.scoring import run_classifier
from ddpm_course.editing import inpaint, sdedit, REPAINT_STEPS, REPAINT_JUMP, REPAINT_RESAMPLE


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run', default='runs/default')
    p.add_argument('--source', type=int, default=3, help="the class to redraw")
    p.add_argument('--target', type=int, default=8, help="the class to redraw it as")
    p.add_argument('--out', default=str(ROOT/'bench'/'editing'))
    a = p.parse_args()
    t_start, device = time.time(), resolve_device(None)
    d, config = load_run(a.run, device=device)
    clf, dls = run_classifier(config, Path(a.run)/'eval', device=device, verbose=True)
    xv, yv = dls.valid_ds.images, dls.valid_ds.labels
    xr, H = xv.float() / 127.5 - 1, d.img_size[0]
    judge = lambda x: (classify(clf, to_unit(x)) == yv[:len(x)]).float().mean().item()
    bottom = torch.zeros(H, H); bottom[H // 2:] = 1
    t0 = time.time(); done = inpaint(d, xr, bottom, seed=0); t_inp = time.time() - t0
    told = inpaint(d, xr, bottom, labels=yv, seed=0) if d.conditional else None
    acc = {'real': judge(xr), 'top half only (bottom blank)': judge(xr * (1 - bottom) - bottom), 'completed, no label': judge(done)}
    if told is not None: acc['completed, told the class'] = judge(told)
    acc['guessing'] = 1 / dls.c
    assert torch.equal(done * (1 - bottom), xr * (1 - bottom))
    src = xr[yv == a.source].repeat(4, 1, 1, 1)
    sweep = [0., 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.]
    as_t, as_s = [], []
    for st in sweep:
        pr = classify(clf, to_unit(sdedit(d, src, st, labels=a.target, seed=1)))
        as_t.append((pr == a.target).float().mean().item()); as_s.append((pr == a.source).float().mean().item())
    picks = [0, 3, 7, 12, 20, 31]
    rows = [torch.cat([xr[i:i + 1], xr[i:i + 1] * (1 - bottom), inpaint(d, xr[i:i + 1].expand(4, -1, -1, -1), bottom, seed=i).cpu()]) for i in picks]
    img_dir = ROOT/'nbs'/'images'
    save_grid(torch.cat(rows), img_dir/'inpaint_default.png', nrow=6, titles=['real', 'given'] + ['fill'] * 4 + [''] * (6 * len(picks) - 6))
    strengths = [0., 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 1.]
    six = xr[yv == a.source][:6]
    g = torch.stack([sdedit(d, six, st, labels=a.target, seed=0).cpu() for st in strengths], 1).flatten(0, 1)
    save_grid(g, img_dir/'sdedit_default.png', nrow=len(strengths), titles=[f's={st:g}' for st in strengths] * len(six))
    vocab = dls.vocab
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, {device}"
    res = dict(run=a.run, machine=machine, n_heldout=len(xr), repaint=dict(steps=REPAINT_STEPS, jump=REPAINT_JUMP, resample=REPAINT_RESAMPLE,
               seconds=t_inp), judge_accuracy=acc, sdedit=dict(source=vocab[a.source], target=vocab[a.target], n=len(src), strengths=sweep,
               as_target=as_t, as_source=as_s), seconds=time.time() - t_start)
    out = Path(a.out); out.with_suffix('.json').write_text(json.dumps(res, indent=1))
    lines = [f"Editing {a.run}: {len(xr)} held-out images, judged by the run's classifier; RePaint {REPAINT_STEPS} levels, jump {REPAINT_JUMP}, "
             f"{REPAINT_RESAMPLE} resamplings ({REPAINT_STEPS * REPAINT_RESAMPLE} model calls an image; {t_inp:.0f} s for all {len(xr)}). Machine: {machine}.", '',
             "| images | judged the right class |", "|---|---:|"] + [f"| {k} | {v:.1%} |" for k, v in acc.items()]
    lines += ['', f"SDEdit: {len(src)} edits of held-out {vocab[a.source]}s (4 noises each) asked for a {vocab[a.target]} (guidance 3, {DEFAULT_SAMPLER}, {DEFAULT_STEPS} model calls):", '',
              '| strength | ' + ' | '.join(f'{s:g}' for s in sweep) + ' |', '|---|' + '---:|' * len(sweep),
              f'| read as {vocab[a.target]} | ' + ' | '.join(f'{v:.0%}' for v in as_t) + ' |',
              f'| read as {vocab[a.source]} | ' + ' | '.join(f'{v:.0%}' for v in as_s) + ' |', '', f"Took {res['seconds']:.0f} s."]
    out.with_suffix('.md').write_text('\n'.join(lines) + '\n'); print('\n'.join(lines))


if __name__ == '__main__': main()
