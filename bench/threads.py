"""How many threads should training use on a small CPU machine? Times the default job's training step (the `small`
UNet, class-conditional, 16x16 digits, batch 32) with 1 and 2 threads, and with OpenMP's default and PASSIVE wait
policies, on a quiet machine and on one where another process keeps one core busy (as when two notebooks run at
once). Each cell is a fresh process, since OpenMP reads OMP_WAIT_POLICY once, when it starts.

    .venv/bin/python bench/threads.py                 # prints the table; --out bench/results_threads.md writes it too
"""
import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = r'''
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from ddpm_course.models import make_unet
from ddpm_course.schedules import make_schedule
from ddpm_course.training import DDPMCallback, weighted_mse
torch.manual_seed(0)
net = make_unet('small', c_in=1, img_size=(16, 16), num_classes=10)
ddpm = DDPMCallback(make_schedule('cosine', 1000), 'v', p_uncond=0.1).setup(net)
opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
x0, y = torch.rand(32, 1, 16, 16) * 2 - 1, torch.randint(0, 10, (32,))
def step():
    xb, yb = ddpm.make_batch(x0, y, torch.randint(0, 1000, (32,)), torch.randn_like(x0))
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    p.add_argument('--policies', nargs='+', default=['default', 'PASSIVE'], help="OMP_WAIT_POLICY values; 'default' leaves it unset")
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--steps', type=int, default=20)
    p.add_argument('--repeats', type=int, default=3, help="runs of each cell, interleaved; the table gives the median")
    p.add_argument('--out', default=None, help="also write the table (Markdown) here")
    a = p.parse_args()
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
