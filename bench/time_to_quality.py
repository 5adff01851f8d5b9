"""Time to quality: the seed document's training loop against the course's default recipe, on the same data and the
same wall-clock budgets, on this machine, in one run.

    python bench/time_to_quality.py --budgets 2 4 8 --out bench/time_to_quality.md

Data: the built-in digits at 32x32 (offline), the same 90/10 split as `get_dls('digits', size=32)`.

- **seed**: the seed document's loop as written (tests/seed_reference.py and bench/bench.py's `SeedTrainer`): its
  `UNet_conditional` (15.7 M parameters at 1 channel), MSE on eps, t in [1, T), label dropout of the whole batch with
  probability 0.1, AdamW (lr 5e-3, weight decay 0.001) with OneCycleLR over the budget, `EMA(0.995)` (a plain copy for
  its first 2000 steps), batch 10 (the reference repository's default), fp32.
- **course**: `ddpm_course.trainer.train` with the defaults the command line uses for 32 px images (the `mini` preset,
  conditional, v-prediction, cosine schedule, EMA 0.999, batch 32, AdamW, one-cycle), its length in steps set from the
  budget and its measured speed.

Each recipe trains once, for the largest budget (its learning-rate schedule spans it), and its EMA weights are kept
when the training time passes each budget. Each snapshot is sampled with DDIM and classifier-free guidance 3 and scored
with a judge (chapter 01's `SmallClassifier`) trained on the real training digits: FID and KID on the judge's features
against the held-out real digits, and the share of samples judged the asked digit.

The seed's own sampler (999 steps, two network calls each) would take hours on a CPU for 500 samples of its 15.7 M-parameter
UNet, so its snapshots are sampled with the course's DDIM at `--seed-steps` steps, and `--seed-n` samples (printed in
the table); that helps the seed, not the course. FID depends on the number of samples (it is biased upward for few), so
the comparison row scores both recipes on the same number; KID is unbiased in it.
"""
import argparse, copy, json, os, platform, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch
import torch.nn as nn
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'bench')); sys.path.insert(0, str(ROOT/'tests')); sys.path.insert(0, str(ROOT))
import seed_reference as seed                                            # noqa: E402
from ddpm_course.data import load_images, split, get_dls, train_classifier, classify, balanced_subset   # noqa: E402
from ddpm_course.machine import set_threads                             # noqa: E402
from ddpm_course.schedules import make_schedule                         # noqa: E402
from ddpm_course.diffusion import Diffusion                             # noqa: E402
from ddpm_course.ema import EMACallback                                 # noqa: E402
from ddpm_course.settings import TrainConfig                            # noqa: E402
from ddpm_course.trainer import train                                   # noqa: E402
from ddpm_course.runs import read_config                                # noqa: E402
from ddpm_course.evaluation import features_of, fid_from_features, kid, sample_set  # noqa: E402
from fastai.callback.core import Callback, CancelFitException          # noqa: E402

T, SIZE, K = 1000, 32, 10

class SeedLoop:
    "The seed's training step as written (bench/bench.py's SeedTrainer), on 1-channel images, with the document's AdamW weight decay"
    def __init__(self, total_steps, lr=5e-3):
        self.beta = torch.linspace(1e-4, 0.02, T); self.alpha_hat = torch.cumprod(1. - self.beta, dim=0)
        self.model = seed.UNet_conditional(1, 1, num_classes=K)
        self.ema, self.ema_model = seed.EMA(0.995), copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.001)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=lr, total_steps=total_steps)
        self.mse, self.steps = nn.MSELoss(), 0
    def step(self, images, labels):
        t = torch.randint(low=1, high=T, size=(images.shape[0],))
        a = self.alpha_hat[t][:, None, None, None]
        eps = torch.randn_like(images); x_t = a.sqrt() * images + (1 - a).sqrt() * eps
        if np.random.random() < 0.1: labels = None
        loss = self.mse(eps, self.model(x_t, t, labels))
        self.opt.zero_grad(); loss.backward(); self.opt.step()
        self.ema.step_ema(self.ema_model, self.model); self.sched.step(); self.steps += 1
        return loss

def seed_diffusion(model) -> Diffusion:
    "The seed's network as a `Diffusion` (its linear schedule, eps), its `y=None` standing for the course's null class"
    def net(x, t, y):
        null = y == K
        if null.all(): return model(x, t, None)
        if not null.any(): return model(x, t, y)
        out = torch.empty_like(x)
        out[~null] = model(x[~null], t[~null], y[~null]); out[null] = model(x[null], t[null], None)
        return out
    return Diffusion(net, make_schedule('linear', T=T), 'eps', num_classes=K, channels=1, img_size=(SIZE, SIZE))

def train_seed(x, y, budgets_s, bs=10, log=print):
    "Train the seed loop for the largest budget; {budget: EMA state} at each one"
    probe = SeedLoop(1000); g = torch.Generator().manual_seed(0)
    for i in range(4):                                                   # its speed, to size the OneCycleLR
        if i == 1: t0 = time.time()
        idx = torch.randint(0, len(x), (bs,), generator=g); probe.step(x[idx], y[idx])
    step_s = (time.time() - t0) / 3; del probe
    total = int(budgets_s[-1] / step_s * 1.1) + 10
    torch.manual_seed(0); np.random.seed(0)
    loop, snaps, t0, order = SeedLoop(total), {}, time.time(), torch.randperm(len(x))
    pos, left = 0, list(budgets_s)
    while left and loop.steps < total:
        if pos + bs > len(x): order, pos = torch.randperm(len(x)), 0
        idx = order[pos:pos + bs]; pos += bs
        loss = loop.step(x[idx], y[idx])
        el = time.time() - t0
        while left and el >= left[0]:
            snaps[left.pop(0)] = dict(state=copy.deepcopy(loop.ema_model.state_dict()), steps=loop.steps, images=loop.steps * bs, loss=float(loss))
            log(f"  seed: {el / 60:.1f} min, {loop.steps} steps, loss {float(loss):.4f}")
    return snaps, step_s

class Snapshots(Callback):
    "Keep the EMA weights when the fit's wall time passes each budget; stop after the last"
    order = 90
    def __init__(self, budgets_s, log=print): self.left, self.snaps, self.log = list(budgets_s), {}, log
    def before_fit(self): self.t0 = time.time()
    def after_batch(self):
        if not self.training: return
        el = time.time() - self.t0
        while self.left and el >= self.left[0]:
            ema = next(c for c in self.learn.cbs if isinstance(c, EMACallback))
            self.snaps[self.left.pop(0)] = dict(state=copy.deepcopy(ema.ema.shadow_state_dict()), steps=self.train_iter, images=self.train_iter * self.dls.train.bs,
                                                loss=float(self.learn.smooth_loss))
            self.log(f"  course: {el / 60:.1f} min, {self.train_iter} steps, loss {self.snaps[max(self.snaps)]['loss']:.4f}")
        if not self.left: raise CancelFitException()

def train_course(budgets_s, step_s_guess, log=print):
    "Train the course's default recipe for the largest budget; {budget: EMA state} at each one, and the Diffusion to load them into"
    steps = int(budgets_s[-1] / step_s_guess * 1.05)
    cfg = TrainConfig(dataset='digits', size=SIZE, conditional=True, steps=steps, sample_every=0, wandb='off')
    cb = Snapshots(budgets_s, log)
    with tempfile.TemporaryDirectory() as out:
        train(cfg, Path(out)/'run', cbs=[cb], quiet=True)
        d = Diffusion.from_config(read_config(Path(out)/'run'))          # the model as the run describes it (schedule, pred_type)
    return cb.snaps, d

def course_step_s(log=print):
    "The course recipe's time per step on this machine, from a short run"
    cfg = TrainConfig(dataset='digits', size=SIZE, conditional=True, steps=40, sample_every=0, wandb='off')
    with tempfile.TemporaryDirectory() as out:
        t = {}
        class Clock(Callback):
            def after_batch(self):
                if self.training and self.train_iter == 10: t[0] = time.time()
                if self.training and self.train_iter == 40: t[1] = time.time()
        train(cfg, Path(out)/'run', cbs=[Clock()], quiet=True)
    return (t[1] - t[0]) / 30

def score(d, clf, f_ref, n, steps, seed=0):
    x, y = sample_set(d, n, guidance=3, steps=steps, seed=seed, bs=250)
    f = features_of(clf, x)
    return dict(n=n, fid=fid_from_features(f, f_ref), kid=kid(f, f_ref)[0], accuracy=float((classify(clf, x) == y).float().mean())), f, y

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--budgets', type=float, nargs='+', default=[2, 4, 8], help="minutes of training")
    p.add_argument('--n', type=int, default=500, help="samples of the course at each budget")
    p.add_argument('--seed-n', type=int, default=100, help="samples of the seed at each budget (and the course's comparison row)")
    p.add_argument('--steps', type=int, default=50, help="DDIM steps of the course")
    p.add_argument('--seed-steps', type=int, default=10, help="DDIM steps of the seed")
    p.add_argument('--course-extra', type=float, nargs='*', default=[0.25, 0.5, 1], help="smaller budgets (minutes) of the course only, scored on --seed-n samples: where it reaches the seed's quality")
    p.add_argument('--out', default='bench/time_to_quality.md')
    a = p.parse_args()
    set_threads(None)
    budgets = [b * 60 for b in sorted(a.budgets)]
    log = lambda m: print(m, flush=True)
    t_start = time.time()
    x, y, _ = load_images('digits', SIZE); tr, va = split(len(x), 0.1, 42)
    x_tr, y_tr, x_va, y_va = x[tr].float() / 127.5 - 1, y[tr], x[va], y[va]
    clf = train_classifier(get_dls('digits', size=SIZE, bs=128, device='cpu'), epochs=8)
    f_ref = features_of(clf, x_va)
    judge_acc = float((classify(clf, x_va) == y_va).float().mean())
    floor = {}
    for n in {a.n, a.seed_n}:
        idx = balanced_subset(y[tr], min(n, len(tr)), seed=1)
        fr = features_of(clf, x[tr][idx]); floor[n] = dict(fid=fid_from_features(fr, f_ref), kid=kid(fr, f_ref)[0])
    log(f"judge: {judge_acc:.1%} of {len(va)} held-out real digits")
    log("training the seed loop"); seed_snaps, seed_step_s = train_seed(x_tr, y_tr, budgets, log=log)
    extra = [e * 60 for e in a.course_extra if e * 60 < budgets[-1] and e * 60 not in budgets]
    log("training the course recipe"); step_s = course_step_s(log); course_snaps, cd = train_course(sorted(budgets + extra), step_s, log)
    rows = []
    for b in sorted(budgets + extra):
        if b in extra:                                                   # the course alone, on the seed's number of samples
            c = course_snaps.get(b)
            if c:
                cd.net.load_state_dict(c['state']); cd.net.eval()
                r, _, _ = score(cd, clf, f_ref, a.seed_n, a.steps)
                rows.append(dict(budget_min=b / 60, course=dict(steps=c['steps'], images=c['images'], fid_at_seed_n=r['fid'], kid_at_seed_n=r['kid'], accuracy_at_seed_n=r['accuracy'])))
                log(json.dumps(rows[-1]))
            continue
        s = seed_snaps.get(b); c = course_snaps.get(b)
        row = dict(budget_min=b / 60)
        if s:
            m = seed.UNet_conditional(1, 1, num_classes=K); m.load_state_dict(s['state']); m.eval()
            t0 = time.time(); r, _, _ = score(seed_diffusion(m), clf, f_ref, a.seed_n, a.seed_steps)
            row['seed'] = dict(**r, steps=s['steps'], images=s['images'], sample_s=time.time() - t0)
        if c:
            cd.net.load_state_dict(c['state']); cd.net.eval()
            t0 = time.time(); r, f, yy = score(cd, clf, f_ref, a.n, a.steps)
            idx = balanced_subset(yy, a.seed_n, seed=2)                    # the same number of samples as the seed's, for FID
            row['course'] = dict(**r, steps=c['steps'], images=c['images'], sample_s=time.time() - t0,
                                 fid_at_seed_n=fid_from_features(f[idx.numpy()], f_ref), kid_at_seed_n=kid(f[idx.numpy()], f_ref)[0])
        rows.append(row); log(json.dumps(row))
    # the ratio: the least course budget whose FID (on the seed's number of samples) is at most the seed's best
    best = min((r for r in rows if 'seed' in r), key=lambda r: r['seed']['fid'])          # the seed's best, and when it got there
    best_seed, seed_at = best['seed']['fid'], best['budget_min']
    reach = next((r['budget_min'] for r in rows if 'course' in r and r['course']['fid_at_seed_n'] <= best_seed), None)
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
    head = (f"Digits at 32x32, {cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}; one run, "
            f"{(time.time() - t_start) / 60:.0f} min in all. Judge: {judge_acc:.1%} on the {len(va)} held-out real digits. "
            f"Seed: {seed_step_s:.2f} s a step (batch 10); course: {step_s:.3f} s a step (batch 32).")
    md = [head, "", "| training budget | seed: steps | seed: FID / KID / judged right | course: steps | course: FID / KID / judged right "
          f"({a.n} samples) | course on {a.seed_n} samples: FID / KID |", "|---|---|---|---|---|---|"]
    for r in rows:
        s, c = r.get('seed'), r.get('course')
        md.append(f"| {r['budget_min']:g} min | {s['steps'] if s else '-'} | "
                  + (f"{s['fid']:.1f} / {s['kid']:.3f} / {s['accuracy']:.0%}" if s else '-') + f" | {c['steps'] if c else '-'} | "
                  + (f"{c['fid']:.2f} / {c['kid']:.4f} / {c['accuracy']:.1%}" if c and 'fid' in c else '-') + " | "
                  + (f"{c['fid_at_seed_n']:.1f} / {c['kid_at_seed_n']:.3f}" if c else '-') + " |")
    md.append(f"| real training digits | | {floor[a.seed_n]['fid']:.1f} / {floor[a.seed_n]['kid']:.3f} ({a.seed_n}) | | "
              f"{floor[a.n]['fid']:.2f} / {floor[a.n]['kid']:.4f} / {judge_acc:.1%} (judge, held-out) | |")
    ratio = (f"The course reaches the seed's best FID ({best_seed:.1f}, after {seed_at:g} min) within {reach:g} min: "
             f"a ratio of at most {reach / seed_at:.2f} (the course's smallest budget that does, over the seed's)." if reach is not None else
             f"The course did not reach the seed's best FID ({best_seed:.1f}) within the budgets.")
    md += ["", ratio, f"Seed samples: DDIM {a.seed_steps} steps, {a.seed_n} each; course samples: DDIM {a.steps} steps, {a.n} each; guidance 3."]
    text = '\n'.join(md) + '\n'
    Path(a.out).write_text(text); Path(a.out).with_suffix('.json').write_text(json.dumps(dict(rows=rows, floor=floor, judge=judge_acc, ratio=reach and reach / seed_at), indent=1))
    print(text)

if __name__ == '__main__': main()
