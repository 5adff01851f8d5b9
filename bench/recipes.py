"""Quality against training time of a run, on real data: for each epoch checkpoint of a run folder, sample with the
EMA weights and score the samples with a judge trained on the dataset's real training split.

    python bench/npz_to_folder.py ../shared/data/emnist_letters_train.npz /tmp/emnist60k --n 60000
    ddpm_course train --dataset /tmp/emnist60k --out runs/letters60k          # no other flag: the planned recipe
    python bench/recipes.py --run runs/letters60k --train-npz ../shared/data/emnist_letters_train.npz \\
        --test-npz ../shared/data/emnist_letters_test.npz --out bench/recipes/letters

For each checkpoint: the training time so far (fastai's elapsed time at the end of that epoch, training and validation), FID and KID of
the samples against the judge's features of the real held-out images, the share of samples the judge reads as the
class they were asked for, and a grid (one row per class). The real held-out images give the two reference figures:
the judge's own accuracy on them, and the FID of as many real training images as there are samples (the floor).
Writes <out>/results.json, <out>/results.md and <out>/epoch_K.png.
"""
import argparse, json, os, platform, sys, time
from pathlib import Path
import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from ddpm_course.data import ImageDataset, train_classifier, balanced_subset, per_class_grid, classify
from ddpm_course.core import save_grid, class_rows
from ddpm_course.machine import set_threads
from ddpm_course.diffusion import Diffusion, load_safetensors
from ddpm_course.guidance import DEFAULT_GUIDANCE
from ddpm_course.runs import read_config
from ddpm_course.evaluation import features_of, fid_from_features, kid, sample_set, score_samples

def npz_images(path, split=None, size=None):
    "uint8 (N, C, H, W) images and labels of a labelled .npz, optionally one `split`, resized to `size` like the run's data"
    d = np.load(path)
    x, y = d['images'], d['labels']
    if split is not None: keep = d['split'] == split; x, y = x[keep], y[keep]
    x = torch.from_numpy(x if x.ndim == 4 else x[..., None]).permute(0, 3, 1, 2).contiguous()
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        import torch.nn.functional as F
        x = F.interpolate(x.float(), size=tuple(size), mode='bicubic', align_corners=False).round().clamp(0, 255).to(torch.uint8)
    return x, torch.from_numpy(y).long(), [str(c) for c in d['class_names']]

def judge(x_tr, y_tr, x_te, y_te, classes, n_images, epochs, seed=0):
    "A SmallClassifier trained on a class-balanced subset of the real training split; its accuracy on the real held-out split"
    idx = balanced_subset(y_tr, n_images, seed)
    tr, te = ImageDataset(x_tr[idx], y_tr[idx], classes), ImageDataset(x_te, y_te, classes)
    dls = DataLoaders(DataLoader(tr, bs=128, shuffle=True, drop_last=True), DataLoader(te, bs=512))
    for dl in dls.loaders: dl.n_inp = 1
    dls.c, dls.n_channels = len(classes), x_tr.shape[1]
    torch.manual_seed(seed)
    t0 = time.time(); clf = train_classifier(dls, epochs=epochs)
    return clf, float((classify(clf, x_te) == y_te).float().mean()), time.time() - t0

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run', required=True); p.add_argument('--out', required=True)
    p.add_argument('--train-npz', required=True); p.add_argument('--test-npz', required=True)
    p.add_argument('--train-split', type=int, default=None); p.add_argument('--test-split', type=int, default=None)
    p.add_argument('--judge-images', type=int, default=26_000); p.add_argument('--judge-epochs', type=int, default=6)
    p.add_argument('--n', type=int, default=520, help="samples per checkpoint (balanced over the classes)")
    p.add_argument('--steps', type=int, default=50); p.add_argument('--guidance', type=float, default=DEFAULT_GUIDANCE)
    p.add_argument('--epochs', type=int, nargs='*', default=None, help="checkpoints to score (default: all)")
    p.add_argument('--extra-runs', nargs='*', default=[], help="other (shorter) runs of the same data: their last checkpoint is scored too")
    p.add_argument('--render', action='store_true', help="only rewrite results.md from results.json")
    a = p.parse_args()
    set_threads(None)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    if a.render: return render(json.loads((out/'results.json').read_text()), out)
    cfg = read_config(a.run)
    size = cfg['data']['img_size']
    x_tr, y_tr, classes = npz_images(a.train_npz, a.train_split, size)
    x_te, y_te, _ = npz_images(a.test_npz, a.test_split, size)
    clf, judge_acc, judge_s = judge(x_tr, y_tr, x_te, y_te, classes, a.judge_images, a.judge_epochs)
    print(f"judge: {judge_acc:.1%} of {len(y_te):,} held-out real images, trained in {judge_s:.0f} s on {a.judge_images:,} real training images")
    f_ref = features_of(clf, x_te)
    real = x_tr[balanced_subset(y_tr, a.n, seed=1)]
    floor_fid = fid_from_features(features_of(clf, real), f_ref); floor_kid = kid(features_of(clf, real), f_ref)[0]
    rows = []
    for run in [*a.extra_runs, a.run]:
        rcfg = read_config(run)
        ckpts = sorted(Path(run, 'checkpoints').glob('epoch_*'))
        if run != a.run: ckpts = ckpts[-1:]
        history = [dict(h['__dict__']) for h in dict(json.loads((ckpts[-1]/'state.json').read_text())['state']['__dict__'])['history']]
        plan = rcfg.get('plan', {})
        for ck in ckpts:
            k = int(ck.name.split('_')[1])
            if run == a.run and a.epochs and k not in a.epochs: continue
            d = Diffusion.from_config(rcfg, load_safetensors(ck/'ema.safetensors'), str(ck)).eval()
            t0 = time.time()
            x, y = sample_set(d, a.n, guidance=a.guidance, steps=a.steps, seed=0)
            r = score_samples(clf, x, y, f_ref)
            per = a.n // len(classes)
            name = f"{Path(run).name}_epoch_{k}"
            save_grid(per_class_grid(x, y, len(classes), min(per, 10)), out/f'{name}.png', nrow=min(per, 10), value_range=(0, 1),
                      titles=[classes[c] for c in class_rows(len(classes), min(per, 10))])
            train_s = float(history[k - 1]['time'])                      # fastai's elapsed time at the end of epoch k
            rows.append(dict(run=Path(run).name, epoch=k, epochs=plan.get('epochs'), steps=k * plan.get('epoch_steps', 0),
                             train_s=train_s, fid=r['fid'], kid=r['kid'], accuracy=r['accuracy'], sample_s=time.time() - t0, grid=f'{name}.png'))
            print(f"{name}: {train_s / 60:.1f} min of training, FID {r['fid']:.2f}, KID {r['kid']:.4f}, judged right {r['accuracy']:.1%} "
                  f"({time.time() - t0:.0f} s to sample and score)", flush=True)
    rows.sort(key=lambda r: r['train_s'])
    plan = cfg.get('plan', {})
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
    res = dict(run=str(a.run), dataset=cfg['train']['dataset'], plan=plan, preset=cfg['train']['preset'], machine=f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}",
               judge=dict(accuracy=judge_acc, images=a.judge_images, epochs=a.judge_epochs, seconds=judge_s, held_out=len(y_te)),
               floor=dict(fid=floor_fid, kid=floor_kid, n=a.n), sampler=dict(name='ddim', steps=a.steps, guidance=a.guidance, n=a.n), rows=rows)
    (out/'results.json').write_text(json.dumps(res, indent=1))
    render(res, out)

def render(res, out):
    "results.md: one row per scored checkpoint, and the real images' reference row"
    s, j, f = res['sampler'], res['judge'], res['floor']
    md = [f"{res['dataset']}: `{res['preset']}`; {s['n']} samples per point, DDIM {s['steps']} steps, guidance {s['guidance']:g}; judge: "
          f"{j['accuracy']:.1%} of {j['held_out']:,} held-out real images ({j['images']:,} training images, {j['epochs']} epochs); {res['machine']}", "",
          "| run, checkpoint | training time | steps (of the plan) | FID | KID | judged the asked class |", "|---|---|---|---|---|---|"]
    md += [f"| {r.get('run', '')} epoch {r['epoch']} of {r.get('epochs', '?')} | {r['train_s'] / 60:.1f} min | {r['steps']:,} of {r['steps'] // r['epoch'] * r['epochs']:,} | "
           f"{r['fid']:.2f} | {r['kid']:.4f} | {r['accuracy']:.1%} |" for r in res['rows']]
    md += [f"| real training images ({f['n']}) | | | {f['fid']:.2f} | {f['kid']:.4f} | {j['accuracy']:.1%} (held-out real images) |"]
    (out/'results.md').write_text('\n'.join(md) + '\n'); print('\n'.join(md))

if __name__ == '__main__': main()
