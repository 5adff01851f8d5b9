"""How many threads should training use on a small CPU machine? Times the default job's training step (the `small`
UNet, class-conditional, 16x16 digits, batch 32) with 1 and 2 threads, and with OpenMP's default and PASSIVE wait
policies, on a quiet machine and on one where another process keeps one core busy (as when two notebooks run at
once). Each cell is a fresh process, since OpenMP reads OMP_WAIT_POLICY once, when it starts.

    .venv/bin/python bench/threads.py                 # prints the table; --out bench/results_threads.md writes it too
    .venv/bin/python bench/threads.py --loop --out bench/results_threads_loop.md

`--loop` times the whole training loop instead, as `ddpm_course train` runs it (the real Learner, the run's precision,
checkpoints): the plan's measured seconds a step, with the command line's own choice of wait policy and threads (PASSIVE
only when a core is busy when it starts) against PASSIVE always (what the previous release set), on a quiet machine
and on a busy one, at `--precision auto` (bf16 on a CPU with bf16 instructions) and fp32.
"""
import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path
from hostinfo import cpu_name

ROOT = Path(__file__).resolve().parents[1]
CHILD = r'''
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from ddpm_course.models import make_unet
from ddpm_course.schedules import make_schedule
from ddpm_course.training import DDPMCallback, weighted_mse
from ddpm_course.conditional import drop_labels
torch.manual_seed(0)
net = make_unet('small', c_in=1, img_size=(16, 16), num_classes=10)
ddpm = DDPMCallback(make_schedule('cosine', 1000), 'v').setup(net)
opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
x0, y = torch.rand(32, 1, 16, 16) * 2 - 1, torch.randint(0, 10, (32,))
def step():
    (x_t, t, yl), yb = ddpm.make_batch(x0, y, torch.randint(0, 1000, (32,)), torch.randn_like(x0))
    xb = (x_t, t, drop_labels(yl, 0.1, net.null_class))          # LabelDropout's work (chapter 10)
    loss = weighted_mse(net(*xb), *yb); loss.backward(); opt.step(); opt.zero_grad()
for _ in range(int(sys.argv[2])): step()
t0, c0 = time.perf_counter(), time.process_time()
for _ in range(int(sys.argv[3])): step()
wall = time.perf_counter() - t0
print(json.dumps({'s_per_step': wall / int(sys.argv[3]), 'cpu_over_wall': (time.process_time() - c0) / wall}))
'''
LOAD = "import torch, time\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True: a = (a @ a).tanh()\n"


def cell(threads: int, policy: str | None, warmup: int, steps: int) -> dict:
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    env.pop('OMP_NUM_THREADS', None); env.pop('OMP_WAIT_POLICY', None)
    if policy: env['OMP_WAIT_POLICY'] = policy
    out = subprocess.run([sys.executable, '-c', CHILD, str(threads), str(warmup), str(steps)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


LOOP_CHILD = r'''
import os, sys, ddpm_course.cli as cli
real = cli.set_wait_policy
def spy(busy, environ=os.environ):
    p = real(busy, environ); print(f"wait policy: {p} (busy cores {busy if busy is None else round(busy, 2)})", flush=True); return p
cli.set_wait_policy = spy
sys.argv = ['ddpm_course', 'train', *sys.argv[1:]]
cli.main()
'''


def loop_cell(policy: str | None, precision: str, epochs: int, out: Path) -> dict:
    "One `ddpm_course train` of the default job for `epochs` epochs: the plan's measured s a step, the policy in force, the threads"
    import re, shutil
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    for k in ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY', 'DDPM_CPU_BF16'): env.pop(k, None)
    if policy: env['OMP_WAIT_POLICY'] = policy
    shutil.rmtree(out, ignore_errors=True)
    r = subprocess.run([sys.executable, '-c', LOOP_CHILD, '--epochs', str(epochs), '--wandb', 'off', '--sample-every', '0', '--quiet',
                        '--precision', precision, '--out', str(out)], env=env, capture_output=True, text=True, check=True)
    step = float(re.search(r'measured ([0-9.]+) s a step', r.stdout).group(1))
    chosen = re.search(r'wait policy: (\S+)', r.stdout).group(1)
    return {'s_per_step': step, 'policy_in_force': policy or ("OpenMP's default" if chosen == 'None' else chosen)}


def main_loop(a):
    import tempfile
    rows, out = [], Path(tempfile.mkdtemp())/'run'
    for load in ('quiet', 'one core busy'):
        busy = subprocess.Popen([sys.executable, '-c', LOAD]) if load != 'quiet' else None
        try:
            if busy: time.sleep(2)
            runs = {}
            for _ in range(a.repeats):
                for policy in ('command line', 'PASSIVE'):
                    for prec in a.precisions:
                        r = loop_cell(None if policy == 'command line' else policy, prec, a.epochs, out)
                        runs.setdefault((policy, prec), []).append(r)
                        print(f"  {load:14} {policy:12} {prec:5}: {r['s_per_step']:.3f} s/step ({r['policy_in_force']})", file=sys.stderr)
            for (policy, prec), rs in runs.items():
                rs = sorted(rs, key=lambda r: r['s_per_step'])
                rows.append({'load': load, 'policy': policy, 'precision': prec, **rs[len(rs) // 2], 'range': (rs[0]['s_per_step'], rs[-1]['s_per_step'])})
        finally:
            if busy: busy.kill(); busy.wait()
    from ddpm_course.machine import cpu_has_bf16
    lines = [f"`ddpm_course train` of the default job ({a.epochs} epoch(s) of 50 steps, no grids, W&B off): the plan's measured seconds a step, "
             f"median of {a.repeats} interleaved runs (range in brackets); {os.cpu_count()} CPUs ({cpu_name()}, "
             f"{'with' if cpu_has_bf16() else 'without'} bf16 instructions), torch {__import__('torch').__version__}.",
             '', "| machine | wait policy | precision | policy in force | s/step | x the command line's choice |", '|---|---|---|---|---|---|']
    base = {(r['load'], r['precision']): r['s_per_step'] for r in rows if r['policy'] == 'command line'}
    for r in rows:
        lines.append(f"| {r['load']} | {r['policy'] if r['policy'] == 'PASSIVE' else 'the command line chooses'} | {r['precision']} | {r['policy_in_force']} | "
                     f"{r['s_per_step']:.3f} ({r['range'][0]:.3f}-{r['range'][1]:.3f}) | {r['s_per_step'] / base[(r['load'], r['precision'])]:.2f} |")
    table = '\n'.join(lines)
    print(table)
    if a.out: Path(a.out).write_text(table + '\n')




def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    p.add_argument('--policies', nargs='+', default=['default', 'PASSIVE'], help="OMP_WAIT_POLICY values; 'default' leaves it unset")
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--repeats', type=int, default=3, help="runs of each cell, interleaved; the table gives the median")
    p.add_argument('--out', default=None, help="also write the table (Markdown) here")
    p.add_argument('--loop', action='store_true', help="time the whole `ddpm_course train` loop (see above) instead of a bare step")
    p.add_argument('--epochs', type=int, default=2, help="--loop: epochs of each run (50 steps each)")
    p.add_argument('--precisions', nargs='+', default=['auto', 'fp32'], help="--loop: the precisions to time")
    a = p.parse_args()
    if a.loop: return main_loop(a)
    rows = []
    for load in ('quiet', 'one core busy'):
        busy = subprocess.Popen([sys.executable, '-c', LOAD]) if load != 'quiet' else None
        try:
            if busy: time.sleep(2)
            runs = {}
            for _ in range(a.repeats):                             # interleaved, so that a change in the load hits every cell alike
                for policy in a.policies:
                    for n in a.threads:
                        r = cell(n, None if policy == 'default' else policy, a.warmup, a.steps)
                        runs.setdefault((policy, n), []).append(r)
                        print(f"  {load:14} threads={n} OMP_WAIT_POLICY={policy:8}: {r['s_per_step'] * 1000:7.1f} ms/step", file=sys.stderr)
            for (policy, n), rs in runs.items():
                rs = sorted(rs, key=lambda r: r['s_per_step'])
                med = rs[len(rs) // 2]
                rows.append({'load': load, 'threads': n, 'OMP_WAIT_POLICY': policy, **med,
                             'range': (rs[0]['s_per_step'], rs[-1]['s_per_step'])})
        finally:
            if busy: busy.kill(); busy.wait()
    best = {load: min(r['s_per_step'] for r in rows if r['load'] == load) for load in ('quiet', 'one core busy')}
    lines = [f"Training step of the default job (small UNet, 16x16, batch 32, fp32), {a.steps} steps after {a.warmup} warm-up, "
             f"median of {a.repeats} interleaved runs (range in brackets); "
             f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch {__import__('torch').__version__}.",
             '', '| machine | threads | OMP_WAIT_POLICY | ms/step | x the best on this load | CPU time / wall |', '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['load']} | {r['threads']} | {r['OMP_WAIT_POLICY']} | {r['s_per_step'] * 1000:.0f} "
                     f"({r['range'][0] * 1000:.0f}-{r['range'][1] * 1000:.0f}) | "
                     f"{r['s_per_step'] / best[r['load']]:.2f} | {r['cpu_over_wall']:.2f} |")
    table = '\n'.join(lines)
    print(table)
    if a.out: Path(a.out).write_text(table + '\n')


if __name__ == '__main__': main()
