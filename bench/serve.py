"""The service of chapter 23 on a trained run, measured: throughput and p50/p95 latency at 1, 4 and 16 concurrent
clients with micro-batching and without it (and on the ONNX export), the ONNX export's agreement with PyTorch and its
speed, and a screenshot of the page in Debian's Chromium. Prints tables; writes bench/serve.{json,md},
nbs/images/serve_latency.png and nbs/images/serve_page.png.

    python bench/serve.py --run runs/default        # after `make train`; about 10 min on a 2-core CPU

The server is `ddpm_course serve` in its own process with the machine's threads; the clients are threads of this
process on the same machine (loopback), each sending its next request when its last is answered. One image per request,
labels 0-9 in turn, a new seed each, the default sampler and steps, guidance 3.
"""
import argparse, json, os, platform, sys, time
from pathlib import Path
from hostinfo import cpu_name
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests'))      # harness.py: the service run and measured from the outside (not in the package)
sys.path.insert(0, str(ROOT))
os.environ.setdefault('MPLBACKEND', 'Agg')
import numpy as np
import torch
import matplotlib.pyplot as plt
from ddpm_course.core import to_uint8, to_unit, class_rows
from ddpm_course.runs import load_run
from ddpm_course.sampling import sample, DEFAULT_SAMPLER, DEFAULT_STEPS
from ddpm_course.guidance import guided
from ddpm_course.export import export_onnx, load_onnx, check_onnx_agrees, onnx_inputs, Denoiser, OnnxNet, ONNX_FILE
from harness import ServeProcess, load_test




def timed(fn, repeat: int) -> float:
    "Median seconds of `repeat` calls, after one warm-up call"
    fn(); ts = []
    for _ in range(repeat): t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def load_rows(run, backend, batching, concurrencies, per_client, flags=()):
    s = ServeProcess(run, '--backend', backend, '--max-batch', 32 if batching else 1, '--threads', torch.get_num_threads(), *flags)
    rows = []
    try:
        for c in concurrencies:
            r = load_test(s.url + '/v1/samples', lambda i: {'label': i % 10, 'seed': 1000 + i}, requests=max(16, per_client * c), concurrency=c)
            rows.append(dict(backend=backend, batching='on' if batching else 'off', server=s.lines[-1].strip(), **r))
            x = rows[-1]
            print(f"{backend:5} batching {x['batching']:3} concurrency {c:2}: {x['requests_per_s']:5.1f} req/s, p50 {x['p50_ms']:6.0f} ms, "
                  f"p95 {x['p95_ms']:6.0f} ms, {x['mean_batch']:.1f} images per sampler call, statuses {x['statuses']}", flush=True)
    finally: s.stop()
    return rows


def screenshot(run, path):
    "The page in Debian's Chromium, driven by Playwright: digit 7, eight images, seed 0"
    from playwright.sync_api import sync_playwright
    s = ServeProcess(run, '--threads', torch.get_num_threads())
    try:
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path='/usr/bin/chromium', args=['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                                   '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'])
            page = b.new_page(viewport={'width': 820, 'height': 560})
            page.goto(s.url + '/'); page.wait_for_selector('#go:not([disabled])')
            page.select_option('#label', '7'); page.fill('#n', '8'); page.fill('#seed', '0')
            done = "document.getElementById('grid').naturalWidth > 0 && !document.getElementById('go').disabled"
            page.click('#go'); page.wait_for_function(done)                 # (the first request also warms up the browser)
            page.evaluate("document.getElementById('grid').removeAttribute('src')"); page.click('#go'); page.wait_for_function(done)
            page.screenshot(path=str(path)); b.close()
    finally: s.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run', default='runs/default')
    p.add_argument('--concurrency', type=int, nargs='+', default=[1, 4, 16])
    p.add_argument('--per-client', type=int, default=8, help="requests per client thread at each concurrency (at least 16 in all)")
    p.add_argument('--out', default=str(ROOT/'bench'/'serve'))
    p.add_argument('--no-screenshot', action='store_true')
    a = p.parse_args()
    t_start = time.time(); run = Path(a.run)
    machine = f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, CPU"
    print(machine, flush=True)

    # the export: agreement and speed
    d, _ = load_run(run)
    t0 = time.time(); info = export_onnx(d, run/'onnx'); export_s = time.time() - t0
    do = load_onnx(run/'onnx')
    agree = check_onnx_agrees(d, do.net.session, batches=(1, 2, 20, 200))
    y = class_rows(10, 10)
    gd, gdo = guided(d), guided(do)                         # labels with the default guidance (3), as the service samples them
    x_pt, x_ox = sample(gd, labels=y, seed=0), sample(gdo, labels=y, seed=0)
    lv = (to_uint8(to_unit(x_pt)).int() - to_uint8(to_unit(x_ox)).int()).abs()
    sampling_agree = dict(max_abs=(x_pt - x_ox).abs().max().item(), max_levels=int(lv.max()), pixels_moved=(lv > 0).float().mean().item())
    speed, net = [], Denoiser(d.net).eval()
    for n in (2, 20, 200):                                  # 2: one guided image (conditional + null label in one pass)
        ins = onnx_inputs(d, n)
        with torch.no_grad(): t_pt = timed(lambda: net(*ins), 20 if n < 200 else 5)
        t_ox = timed(lambda: do.net(*ins), 20 if n < 200 else 5)
        speed.append(dict(what=f"denoiser, batch {n}", torch_ms=1000 * t_pt, onnx_ms=1000 * t_ox))
    for n in (1, 100):
        t_pt = timed(lambda: sample(gd, labels=y[:n], seed=0), 3); t_ox = timed(lambda: sample(gdo, labels=y[:n], seed=0), 3)
        speed.append(dict(what=f"sample {n} image{'s' if n > 1 else ''} ({DEFAULT_SAMPLER}, {DEFAULT_STEPS} calls, guided)", torch_ms=1000 * t_pt, onnx_ms=1000 * t_ox))
    for r in speed: print(f"{r['what']:48} torch {r['torch_ms']:8.1f} ms   onnxruntime {r['onnx_ms']:8.1f} ms   ({r['torch_ms'] / r['onnx_ms']:.2f}x)", flush=True)
    print(f"export {export_s:.0f} s; agreement {agree}; sampling {sampling_agree}", flush=True)
    del d, do, gd, gdo

    # the load: torch with and without micro-batching, and the ONNX export with it
    rows = []
    for backend, batching in (('torch', True), ('torch', False), ('onnx', True)):
        rows += load_rows(run, backend, batching, a.concurrency, a.per_client)

    shot = ROOT/'nbs'/'images'/'serve_page.png'
    if not a.no_screenshot: screenshot(run, shot)

    fig, axs = plt.subplots(1, 2, figsize=(9, 3.3))
    for (backend, b), st in ((('torch', 'on'), '-o'), (('torch', 'off'), '--s'), (('onnx', 'on'), ':^')):
        rs = [r for r in rows if r['backend'] == backend and r['batching'] == b]; cs = [r['concurrency'] for r in rs]
        lab = f"{backend}, batching {b}"
        axs[0].plot(cs, [r['p50_ms'] for r in rs], st, label=f'{lab}: p50')
        axs[0].plot(cs, [r['p95_ms'] for r in rs], st, alpha=0.35, label=f'{lab}: p95')
        axs[1].plot(cs, [r['requests_per_s'] for r in rs], st, label=lab)
    for ax, yl in zip(axs, ('latency, ms', 'requests (images) per second')):
        ax.set_xscale('log', base=2); ax.set_xticks(a.concurrency, [str(c) for c in a.concurrency]); ax.set_xlabel('concurrent clients')
        ax.set_ylabel(yl); ax.legend(fontsize=6.5); ax.grid(alpha=0.3)
    fig.suptitle(f"ddpm_course serve, {run.name} run: {cpu_name()}, {os.cpu_count()} CPUs", fontsize=9); fig.tight_layout()
    fig.savefig(ROOT/'nbs'/'images'/'serve_latency.png', dpi=120)

    res = dict(run=str(run), machine=machine, sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS, guidance=3., load=rows,
               onnx=dict(export_seconds=export_s, file_mb=(run/'onnx'/ONNX_FILE).stat().st_size / 1e6, agreement=agree,
                         sampling_agreement=sampling_agree, speed=speed), seconds=time.time() - t_start)
    Path(a.out + '.json').write_text(json.dumps(res, indent=1) + '\n')
    md = [f"# `ddpm_course serve` on `{run}`", '', f"Machine: {machine}. `python bench/serve.py` ({res['seconds'] / 60:.0f} min). "
          f"One image per request, {DEFAULT_SAMPLER} with {DEFAULT_STEPS} calls, guidance 3; the clients on the same machine.", '',
          '| backend | batching | concurrency | requests | req/s | p50 ms | p95 ms | images per sampler call |', '|---|---|---|---|---|---|---|---|']
    md += [f"| {r['backend']} | {r['batching']} | {r['concurrency']} | {r['requests']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['mean_batch']:.1f} |" for r in rows]
    md += ['', f"ONNX export: {res['onnx']['file_mb']:.1f} MB in {export_s:.0f} s; the denoiser within {agree['max_abs']:.1e} of PyTorch "
           f"({agree['max_rel']:.1e} of the largest output) on batches {', '.join(map(str, agree['batches']))}; 100 samples within "
           f"{sampling_agree['max_abs']:.1e} in [-1, 1], {sampling_agree['max_levels']} uint8 level(s) at {sampling_agree['pixels_moved']:.3%} of the pixels.", '',
           '| | PyTorch ms | onnxruntime ms | PyTorch / onnxruntime |', '|---|---|---|---|']
    md += [f"| {r['what']} | {r['torch_ms']:.1f} | {r['onnx_ms']:.1f} | {r['torch_ms'] / r['onnx_ms']:.2f} |" for r in speed]
    Path(a.out + '.md').write_text('\n'.join(md) + '\n')
    print('\n'.join(md))


if __name__ == '__main__': main()
