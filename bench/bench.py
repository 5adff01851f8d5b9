#!/usr/bin/env python
"""Training and sampling speed: the seed document's reference code against the course's, in one run on one machine.

Training (per image size):
  seed    the seed document's training step as written: `UNet_conditional` from tests/seed_reference.py
          (nn.MultiheadAttention over all pixels, `.repeat` of the time embedding), fp32 because its
          `with torch.autocast("cuda") and (torch.enable_grad()):` only enters the second context, AdamW +
          GradScaler + OneCycleLR, MSE on eps, timesteps from [1, T), label dropout per batch, and its `EMA(0.995)`,
          which copies the whole state_dict for the first 2000 steps (so a short benchmark times the copy phase;
          `--seed-ema-phase average` times the averaging phase instead).
  course  the same UNet as `make_unet('seed', num_classes=10)`: SDPA attention, bf16 autocast on a GPU (and on a CPU
          with bf16 instructions; else fp32), channels_last on a GPU, fused AdamW, foreach EMA (`ddpm_course.ema.EMA`), per-sample label
          dropout to the null class, timesteps from [0, T); `--compile` adds a torch.compile row.
Sampling: the seed's 1000-step guided loop (two forward passes per step) against DDIM with batched guidance.

Run `python bench/bench.py --help`; see bench/README.md.
"""
from __future__ import annotations
import argparse, contextlib, copy, ctypes, gc, json, os, platform, sys, time, warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests'))      # the seed's reference code, kept as written
sys.path.insert(0, str(ROOT))
warnings.filterwarnings('ignore', message='.*CUDA is not available.*')   # the seed's autocast("cuda") object on a CPU
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')

import seed_reference as seed                                          # noqa: E402
from ddpm_course.models import make_unet                               # noqa: E402
from ddpm_course.schedules import make_schedule, q_sample              # noqa: E402
from ddpm_course.training import weighted_mse, DDPMCallback            # noqa: E402
from ddpm_course.conditional import drop_labels                        # noqa: E402
from ddpm_course.diffusion import Diffusion                            # noqa: E402
from ddpm_course.machine import resolve_precision, autocast_for, cpu_has_bf16   # noqa: E402
from ddpm_course.speed import graph_breaks                             # noqa: E402
from ddpm_course.sampling import sample_step, timesteps_for, respace_schedule   # noqa: E402
from ddpm_course.guidance import guided                                # noqa: E402
from ddpm_course.data import load_images                               # noqa: E402
from ddpm_course.ema import EMA                                        # noqa: E402
from ddpm_course.sampling import sample, start_noise                   # noqa: E402
from ddpm_course.core import to_unit, to_uint8                         # noqa: E402

NUM_CLASSES, T = 10, 1000
aten = torch.ops.aten

# ---------------------------------------------------------------------------------------------- FLOPs
def _sdpa_cpu_flops(q, k, v, *args, **kw):
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(q, k, v)

def _sdpa_cpu_bwd_flops(grad_out, q, k, v, *args, **kw):
    from torch.utils.flop_counter import sdpa_backward_flop_count
    return sdpa_backward_flop_count(grad_out, q, k, v)

# torch's FlopCounterMode knows the CUDA attention kernels but not the CPU one that SDPA uses here
FLOP_EXTRA = {}
for _name, _f in (('_scaled_dot_product_flash_attention_for_cpu', _sdpa_cpu_flops),
                  ('_scaled_dot_product_flash_attention_for_cpu_backward', _sdpa_cpu_bwd_flops)):
    if hasattr(aten, _name): FLOP_EXTRA[getattr(aten, _name)] = _f

# ---------------------------------------------------------------------------------------------- memory
class Memory:
    "Peak memory of one measurement: torch.cuda.max_memory_allocated on a GPU, peak-RSS growth (VmHWM - VmRSS) on a CPU"
    def __init__(self, device):
        self.device = device
        self.can_reset_hwm = False
        if device.type != 'cuda':
            try:
                with open('/proc/self/clear_refs', 'w') as f: f.write('5')   # '5' resets the peak RSS (VmHWM) to the current RSS
                self.can_reset_hwm = True
            except OSError: pass

    @property
    def method(self) -> str:
        if self.device.type == 'cuda': return 'torch.cuda.max_memory_allocated (absolute, includes the batch)'
        if self.can_reset_hwm: return ('peak RSS growth: /proc/self/status VmHWM after the run minus VmRSS before it, '
                                       'the peak reset through /proc/self/clear_refs and freed memory returned with malloc_trim first')
        return 'peak RSS growth from resource.getrusage ru_maxrss (a lower bound: it never goes down between measurements)'

    @staticmethod
    def _status(key: str) -> int:
        for line in open('/proc/self/status'):
            if line.startswith(key): return int(line.split()[1]) * 1024
        return 0

    def start(self):
        gc.collect()
        if self.device.type == 'cuda':
            torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
            return
        with contextlib.suppress(Exception): ctypes.CDLL('libc.so.6').malloc_trim(0)
        if self.can_reset_hwm:
            with open('/proc/self/clear_refs', 'w') as f: f.write('5')
            self.base = self._status('VmRSS:')
        else:
            import resource
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def peak(self) -> int:
        "Bytes"
        if self.device.type == 'cuda': return torch.cuda.max_memory_allocated()
        if self.can_reset_hwm: return self._status('VmHWM:') - self.base
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base

def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()

# ---------------------------------------------------------------------------------------------- the seed's step
class SeedTrainer:
    "The seed document's `Diffusion` training step, as written (bugs included)"
    def __init__(self, img_size, device, total_steps, ema_phase='copy', lr=5e-3, noise_steps=T):
        self.device, self.img_size, self.noise_steps = device, img_size, noise_steps
        self.beta = torch.linspace(1e-4, 0.02, noise_steps).to(device)   # prepare_noise_schedule
        self.alpha = 1. - self.beta
        self.alpha_hat = torch.cumprod(self.alpha, dim=0)
        self.model = seed.UNet_conditional(3, 3, num_classes=NUM_CLASSES).to(device)
        self.ema = seed.EMA(0.995)
        self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        if ema_phase == 'average': self.ema.step = 2000                  # skip the 2000-step copy phase
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, eps=1e-5)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=lr, total_steps=total_steps)
        self.mse = nn.MSELoss()
        self.scaler = torch.amp.GradScaler(device.type, enabled=device.type == 'cuda')   # torch.cuda.amp.GradScaler()
        self.model.train()
        self.flop_model = self.model

    def sample_timesteps(self, n):
        return torch.randint(low=1, high=self.noise_steps, size=(n,))

    def noise_images(self, x, t):
        "Add noise to images at instant t"
        sqrt_alpha_hat = torch.sqrt(self.alpha_hat[t])[:, None, None, None]
        sqrt_one_minus_alpha_hat = torch.sqrt(1 - self.alpha_hat[t])[:, None, None, None]
        eps = torch.randn_like(x)
        return sqrt_alpha_hat * x + sqrt_one_minus_alpha_hat * eps, eps

    def train_step(self, loss):
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.step_ema(self.ema_model, self.model)
        self.scheduler.step()

    def step(self, images, labels):
        # the seed's one_epoch body for one batch; `A and B` enters only B, so autocast never turns on (on any device)
        with torch.autocast("cuda") and (torch.enable_grad()):
            images = images.to(self.device)
            labels = labels.to(self.device)
            t = self.sample_timesteps(images.shape[0]).to(self.device)
            x_t, noise = self.noise_images(images, t)
            if np.random.random() < 0.1:
                labels = None
            predicted_noise = self.model(x_t, t, labels)
            loss = self.mse(noise, predicted_noise)
        self.train_step(loss)

# ---------------------------------------------------------------------------------------------- the course's step
class CourseTrainer:
    "The course's training step with the `seed` preset, written out (what DDPMCallback + fastai do per batch)"
    def __init__(self, img_size, device, total_steps, compile=False, lr=3e-3, wd=1e-2, p_uncond=0.1, ema_decay=0.999):
        self.device, self.p_uncond = device, p_uncond
        self.model = make_unet('seed', img_size=img_size, num_classes=NUM_CLASSES).to(device)
        self.channels_last = device.type == 'cuda'
        if self.channels_last: self.model = self.model.to(memory_format=torch.channels_last)
        self.precision = resolve_precision('auto', device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=wd, fused=device.type in ('cuda', 'cpu'))
        self.lr_sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=lr, total_steps=total_steps)
        self.ema = EMA(self.model, ema_decay)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == 'fp16')   # bf16 and fp32 need none
        self.sched = make_schedule('linear', T=T).to(device)                    # the seed's schedule; speed does not depend on it
        self.fwd = torch.compile(self.model) if compile else self.model
        self.model.train()
        self.flop_model = self.model

    def autocast(self): return autocast_for(self.device, self.precision)

    def step(self, x0, y):
        B = x0.shape[0]
        t = torch.randint(0, T, (B,), device=x0.device)
        eps = torch.randn_like(x0)
        x_t, _ = q_sample(x0, t, self.sched, eps)
        if self.channels_last: x_t = x_t.contiguous(memory_format=torch.channels_last)
        y = drop_labels(y, self.p_uncond, self.model.null_class)               # per sample, to the learned null class
        with self.autocast():
            pred = self.fwd(x_t, t, y)
        loss = weighted_mse(pred, eps, torch.ones(B, device=x0.device))
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.ema.update(self.model)
        self.lr_sched.step()

def training_batch(ddpm, x0, y, t, eps, p_uncond, null_class):
    "DDPMCallback's (xb, yb) of a training step, with LabelDropout's per-sample label dropout to the null class (chapter 10)"
    (x_t, t, y), yb = ddpm.make_batch(x0, y, t, eps)
    return (x_t, t, drop_labels(y, p_uncond, null_class)), yb

# ---------------------------------------------------------------------------------------------- graph breaks
def graph_break_table(device) -> str:
    "Graph breaks of the hot paths under torch._dynamo.explain (traced, not compiled), for the `seed` preset at 32x32"
    torch.manual_seed(0)
    net = make_unet('seed', img_size=32, num_classes=NUM_CLASSES).to(device)
    sched = make_schedule('cosine', T).to(device)
    x0, y = torch.rand(4, 3, 32, 32, device=device) * 2 - 1, torch.randint(0, NUM_CLASSES, (4,), device=device)
    t = torch.randint(0, T, (4,), device=device)
    ddpm = DDPMCallback(sched, 'v').setup(net)
    def train_step(x0, y):
        xb, yb = training_batch(ddpm, x0, y, torch.randint(0, T, (len(x0),), device=x0.device), torch.randn_like(x0), 0.1, net.null_class)
        return weighted_mse(net(*xb), *yb)
    d, ts = guided(Diffusion(net.eval(), sched, 'v'), 3.), timesteps_for(T, 50)
    sub = respace_schedule(sched, ts).to(device)
    cases = [('UNet forward', lambda: graph_breaks(net, x0, t, y)),
             ('training step: noising, forward, loss', lambda: graph_breaks(train_step, x0, y)),
             ('DDIM step with guidance 3', lambda: graph_breaks(lambda x: sample_step(d, x, 10, ts, y), x0)),
             ('DDIM step, eta = 1', lambda: graph_breaks(lambda x: sample_step(d, x, 10, ts, y, eta=1.), x0)),
             ('DDPM step (strided) with guidance 3', lambda: graph_breaks(lambda x: sample_step(d, x, 10, ts, y, 'ddpm', sub), x0))]
    lines = [f"Graph breaks under torch._dynamo.explain (`seed` preset, 32x32, {device}):", '', '| hot path | graph breaks | reasons |', '|---|---|---|']
    for name, f in cases:
        n, reasons = f()
        lines.append(f"| {name} | {n} | {'; '.join(reasons) or '-'} |")
    return '\n'.join(lines) + '\n'

# ---------------------------------------------------------------------------------------------- precision on this device
def precision_compare(precisions, device, steps: int, sample_steps: int, log) -> tuple[dict, str]:
    """Train the default job's model (the `small` preset, conditional, 16x16 digits, batch 32) for the same steps from the same
    init, data and noise in each precision; then its validation loss on fixed noise, and 20-step DDIM samples from fixed noise"""
    x, y, _ = load_images('digits', 16)
    x = x.float() / 127.5 - 1
    g = torch.Generator().manual_seed(0); perm = torch.randperm(len(x), generator=g)
    tr, va = perm[256:], perm[:256]
    sched = make_schedule('cosine', T).to(device)
    vt, veps = torch.randint(0, T, (256,), generator=g).to(device), torch.randn(256, 1, 16, 16, generator=g).to(device)
    res, samples = {}, {}
    for prec in precisions:
        resolve_precision(prec, device)
        torch.manual_seed(0)
        net = make_unet('small', c_in=1, img_size=(16, 16), num_classes=NUM_CLASSES).to(device)
        ddpm = DDPMCallback(sched, 'v').setup(net)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2, fused=device.type in ('cuda', 'cpu'))
        scaler = torch.amp.GradScaler(device.type, enabled=prec == 'fp16')      # fp16 needs one; bf16 and fp32 do not
        gen = torch.Generator().manual_seed(1)
        def step(timed):
            idx = tr[torch.randint(0, len(tr), (32,), generator=gen)]
            x0, yb = x[idx].to(device), y[idx].to(device)
            t, eps = torch.randint(0, T, (32,), generator=gen).to(device), torch.randn(32, 1, 16, 16, generator=gen).to(device)
            xb, tb = training_batch(ddpm, x0, yb, t, eps, 0.1, net.null_class)
            with autocast_for(device, prec): pred = net(*xb)
            loss = weighted_mse(pred.float(), *tb)
            opt.zero_grad(set_to_none=True); scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
            return loss
        for _ in range(2): step(False)
        sync(device); t0 = time.perf_counter()
        for _ in range(steps - 2): step(True)
        sync(device); step_s = (time.perf_counter() - t0) / (steps - 2)
        net.eval()
        with torch.no_grad(), autocast_for(device, prec):
            xb, tb = ddpm.make_batch(x[va].to(device), y[va].to(device), vt, veps)          # (validation: no label dropout)
            vloss = weighted_mse(net(*xb).float(), *tb).item()
        d = guided(Diffusion(net, sched, 'v'))                               # labels, guidance DEFAULT_GUIDANCE (3)
        labels = torch.arange(32) % NUM_CLASSES
        xT = start_noise((32, 1, 16, 16), torch.Generator().manual_seed(2), device)
        sync(device); t0 = time.perf_counter()
        with autocast_for(d.device, prec): samples[prec] = sample(d, labels=labels, x_T=xT, steps=sample_steps).cpu()
        sync(device); sample_s = time.perf_counter() - t0
        with autocast_for(d.device, 'fp32'): samples[prec, 'fp32-sampled'] = sample(d, labels=labels, x_T=xT, steps=sample_steps).cpu()
        res[prec] = dict(step_ms=step_s * 1000, img_s=32 / step_s, valid_loss=vloss, sample_s=sample_s)
        log(f"    {prec}: {res[prec]}")
    base = precisions[0]
    rms = lambda a, b: (a - b).pow(2).mean().sqrt().item()
    for prec in precisions:
        res[prec]['samples_rms_vs_' + base] = rms(samples[prec], samples[base])
        res[prec]['same_model_rms_vs_fp32_sampling'] = rms(samples[prec], samples[prec, 'fp32-sampled'])
    lines = [f"Precision on {device} ({'native bf16: ' + str(cpu_has_bf16()) if device.type == 'cpu' else torch.cuda.get_device_name(device)}): "
             f"the default job's model (`small`, conditional, 16x16 digits, batch 32), {steps} training steps from the same init, data "
             f"and noise in each precision; validation loss on 256 held-out digits with fixed noise; 32 samples, DDIM {sample_steps} steps, guidance 3, from fixed noise.",
             '', f"| precision | train ms/step | images/s | x {base} speed | valid loss after {steps} steps | sampling s (32 images) | x {base} | "
             f"samples: RMS vs the {base} model's | RMS vs the same model sampled in fp32 |", '|---|---|---|---|---|---|---|---|---|']
    for prec in precisions:
        r = res[prec]
        lines.append(f"| {prec} | {r['step_ms']:.0f} | {r['img_s']:.0f} | {res[base]['step_ms'] / r['step_ms']:.2f} | {r['valid_loss']:.4f} | "
                     f"{r['sample_s']:.2f} | {res[base]['sample_s'] / r['sample_s']:.2f} | {r['samples_rms_vs_' + base]:.4f} | "
                     f"{r['same_model_rms_vs_fp32_sampling']:.4f} |")
    return res, '\n'.join(lines) + '\n'

# ---------------------------------------------------------------------------------------------- timing
def short_error(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:160] if msg else ''}"

def measure_train(make, x0, y, warmup, iters, device, mem, count_flops=True, log=print):
    "images/s, peak memory and forward+backward FLOPs of one batch for the trainer that `make()` builds"
    res = dict(batch=len(x0), warmup=warmup, iters=iters)
    mem.start()
    tr = None
    try:
        tr = make()
        # the first warm-up step runs under FlopCounterMode: it counts the matmuls, convolutions and attention of
        # one forward + backward on this batch (the optimizer and EMA do no such work); it is not timed
        for i in range(warmup):
            if i == 0 and count_flops:
                with FlopCounterMode(display=False, custom_mapping=FLOP_EXTRA) as fc:
                    tr.step(x0, y)
                res['flops_per_step'] = fc.get_total_flops()
            else:
                tr.step(x0, y)
            sync(device)
        sync(device); t0 = time.perf_counter(); c0 = time.process_time()
        for _ in range(iters): tr.step(x0, y)
        sync(device); dt = time.perf_counter() - t0
        res.update(seconds=dt, step_s=dt / iters, img_s=len(x0) * iters / dt, peak_bytes=mem.peak(),
                   cpu_s=time.process_time() - c0)      # process CPU time: on a loaded CPU machine, how much of the cores we got
        if isinstance(tr, SeedTrainer):
            res['ema_phase'] = 'copy (load_state_dict)' if tr.ema.step <= 2000 else 'average'
            res['ema_steps'] = tr.ema.step
    except torch.OutOfMemoryError as e:
        res['failed'] = 'out of memory'; log(f"    out of memory: {short_error(e)}")
    except Exception as e:
        res['failed'] = 'failed: ' + short_error(e); log(f"    {res['failed']}")
    finally:
        del tr; gc.collect()
        if device.type == 'cuda': torch.cuda.empty_cache()
    return res

# ---------------------------------------------------------------------------------------------- sampling
@torch.inference_mode()
def seed_sample(model, labels, img_size, device, beta, alpha, alpha_hat, cfg_scale=3, noise_steps=T, max_steps=None, c_in=3):
    "The seed's `Diffusion.sample`, stopped after `max_steps` steps when given (to extrapolate on a slow machine)"
    n = len(labels)
    model.eval()
    with torch.inference_mode():
        x = torch.randn((n, c_in, img_size, img_size)).to(device)
        for k, i in enumerate(reversed(range(1, noise_steps))):
            if max_steps is not None and k >= max_steps: break
            t = (torch.ones(n) * i).long().to(device)
            predicted_noise = model(x, t, labels)
            if cfg_scale > 0:
                uncond_predicted_noise = model(x, t, None)
                predicted_noise = torch.lerp(uncond_predicted_noise, predicted_noise, cfg_scale)
            a = alpha[t][:, None, None, None]
            a_hat = alpha_hat[t][:, None, None, None]
            b = beta[t][:, None, None, None]
            if i > 1:
                noise = torch.randn_like(x)
            else:
                noise = torch.zeros_like(x)
            x = 1 / torch.sqrt(a) * (x - ((1 - a) / (torch.sqrt(1 - a_hat))) * predicted_noise) + torch.sqrt(b) * noise
    x = (x.clamp(-1, 1) + 1) / 2
    x = (x * 255).type(torch.uint8)
    return x

def course_sample(model, y, img_size, device, steps, guidance, autocast, channels_last):
    d = Diffusion(model, make_schedule('linear', T=T), 'eps')          # the seed's schedule and objective
    x_T = start_noise((len(y), 3, img_size, img_size), device=device)
    if channels_last: x_T = x_T.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast():
        return to_uint8(to_unit(sample(guided(d, guidance), labels=y, sampler='ddim', steps=steps, x_T=x_T)))

def measure_sampling(args, device, mem, log=print):
    S, n = args.sample_size, args.sample_n
    y = (torch.arange(n) % NUM_CLASSES).to(device)
    out = dict(size=S, n=n, guidance=args.guidance)
    full = T - 1                                                     # the seed's loop visits i = 999 ... 1
    k = min(args.seed_sample_steps or full, full)
    # seed
    mem.start()
    try:
        st = SeedTrainer(S, device, total_steps=10)
        seed_sample(st.model, y, S, device, st.beta, st.alpha, st.alpha_hat, args.guidance, max_steps=1)   # warm-up
        sync(device); t0 = time.perf_counter()
        seed_sample(st.model, y, S, device, st.beta, st.alpha, st.alpha_hat, args.guidance, max_steps=k)
        sync(device); dt = time.perf_counter() - t0
        out['seed'] = dict(steps_run=k, steps_full=full, model_calls_per_step=2, seconds_measured=dt,
                           seconds=dt * full / k, extrapolated=k < full, peak_bytes=mem.peak())
        del st
    except Exception as e:
        out['seed'] = dict(failed=short_error(e)); log(f"    seed sampling failed: {short_error(e)}")
    gc.collect()
    # course
    mem.start()
    try:
        ct = CourseTrainer(S, device, total_steps=10)
        model = ct.model.eval()
        course_sample(model, y, S, device, 1, args.guidance, ct.autocast, ct.channels_last)               # warm-up
        sync(device); t0 = time.perf_counter()
        course_sample(model, y, S, device, args.course_steps, args.guidance, ct.autocast, ct.channels_last)
        sync(device); dt = time.perf_counter() - t0
        out['course'] = dict(steps_run=args.course_steps, model_calls_per_step=1, batch_per_call=2 * n, seconds=dt,
                             precision=ct.precision, peak_bytes=mem.peak())
        del ct, model
    except Exception as e:
        out['course'] = dict(failed=short_error(e)); log(f"    course sampling failed: {short_error(e)}")
    gc.collect()
    if device.type == 'cuda': torch.cuda.empty_cache()
    return out

# ---------------------------------------------------------------------------------------------- machine and table
def machine_info(device) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'): cpu = line.split(':', 1)[1].strip(); break
    info = dict(cpu=cpu, cpu_count=os.cpu_count(), torch=torch.__version__, threads=torch.get_num_threads(),
                python=platform.python_version(), device=str(device))
    if device.type == 'cuda':
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return info

def loadavg() -> str | None:
    with contextlib.suppress(OSError): return ' '.join(open('/proc/loadavg').read().split()[:3])
    return None

def fmt_bytes(b):
    if b is None: return '-'
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"

def sig(x, n=3):
    if x is None: return '-'
    if x == 0: return '0'
    return f"{x:,.{max(n - 1 - int(np.floor(np.log10(abs(x)))), 0)}f}"

def ratio(a, b):
    return f"{sig(a / b, 3)}x" if a is not None and b else '-'

def markdown(results, args) -> str:
    dev = results['machine']['device']
    rows = []
    head = ('| measurement | seed code as written | course (`seed` preset) | course + torch.compile | course / seed |\n'
            '|---|---|---|---|---|')
    for tr in results['train']:
        S, B = tr['size'], tr['batch']
        s, c, k = tr['seed'], tr['course'], tr.get('compile')
        cell = lambda r, f: (r.get('failed') or f(r)) if r is not None else 'not run (use --compile)'
        rows.append(f"| train {S}x{S}, batch {B}: images/s | {cell(s, lambda r: sig(r['img_s']))} | {cell(c, lambda r: sig(r['img_s']))} "
                    f"| {cell(k, lambda r: sig(r['img_s']))} | {ratio(c.get('img_s'), s.get('img_s'))} |")
        rows.append(f"| train {S}x{S}, batch {B}: ms/step | {cell(s, lambda r: sig(1e3 * r['step_s']))} | {cell(c, lambda r: sig(1e3 * r['step_s']))} "
                    f"| {cell(k, lambda r: sig(1e3 * r['step_s']))} | {ratio(c.get('step_s'), s.get('step_s'))} |")
        if not dev.startswith('cuda'):
            share = lambda r: f"{r['cpu_s'] / r['seconds']:.2f}" if r.get('cpu_s') is not None else '-'
            rows.append(f"| train {S}x{S}, batch {B}: process CPU time / wall time | {cell(s, share)} | {cell(c, share)} | {cell(k, share)} | - |")
        rows.append(f"| train {S}x{S}, batch {B}: peak memory | {cell(s, lambda r: fmt_bytes(r['peak_bytes']))} "
                    f"| {cell(c, lambda r: fmt_bytes(r['peak_bytes']))} | {cell(k, lambda r: fmt_bytes(r['peak_bytes']))} "
                    f"| {ratio(c.get('peak_bytes'), s.get('peak_bytes'))} |")
        gf = lambda r: f"{r['flops_per_step'] / r['batch'] / 1e9:.2f}" if r.get('flops_per_step') else '-'
        rows.append(f"| train {S}x{S}: GFLOP per image (fwd+bwd) | {cell(s, gf)} | {cell(c, gf)} | {cell(k, gf)} "
                    f"| {ratio(c.get('flops_per_step'), s.get('flops_per_step'))} |")
        tf = lambda r: sig(r['tflops'], 3) if r.get('tflops') is not None else '-'
        rows.append(f"| train {S}x{S}, batch {B}: achieved TFLOP/s | {cell(s, tf)} | {cell(c, tf)} | {cell(k, tf)} "
                    f"| {ratio(c.get('tflops'), s.get('tflops'))} |")
    sm = results.get('sampling')
    if sm:
        s, c = sm['seed'], sm['course']
        sc = s.get('failed') or (f"{sig(s['seconds'])} s (1000-step loop: {s['steps_full']} steps x 2 calls"
                                 + (f"; extrapolated from {s['steps_run']} steps, {sig(s['seconds_measured'])} s)" if s['extrapolated'] else ')'))
        cc = c.get('failed') or f"{sig(c['seconds'])} s (DDIM {c['steps_run']} steps x 1 call of batch {c['batch_per_call']})"
        r = ratio(c.get('seconds'), s.get('seconds'))
        if c.get('seconds') and s.get('seconds'): r += f" ({s['seconds'] / c['seconds']:.1f}x faster)"
        rows.append(f"| sample {sm['n']} image{'s' if sm['n'] != 1 else ''} {sm['size']}x{sm['size']}, guidance {sm['guidance']:g}: s/batch | {sc} | {cc} | - | {r} |")
    m = results['machine']
    lines = [f"### ddpm_course benchmark on {dev}", '',
             f"Machine: {m['cpu']} ({m['cpu_count']} CPUs), " + (f"GPU {m['gpu']} (CUDA {m['cuda']}), " if 'gpu' in m else 'no GPU used, ')
             + f"torch {m['torch']}, {m['threads']} torch threads, Python {m['python']}. "
             + f"Load average (1/5/15 min) at start: {results['loadavg_start']}, at end: {results['loadavg_end']}. "
             + f"Wall time of the whole run: {results['wall_s']:.0f} s.", '',
             head, *rows, '', 'Notes:']
    notes = [
        f"Timed: {args.iters} training steps per cell after {args.warmup} untimed warm-up step(s); "
        + ("torch.cuda.synchronize() before and after the timed loop." if dev.startswith('cuda') else "CPU wall clock (time.perf_counter)."),
        "Seed: its step as written, fp32 (the autocast never turns on), AdamW + GradScaler "
        + ("(enabled on CUDA)" if dev.startswith('cuda') else "(disabled: CPU)") + " + OneCycleLR, per-batch label dropout, t in [1, T). "
        + "Its EMA ran the " + ', '.join(sorted({tr['seed'].get('ema_phase', '?') for tr in results['train']})) + " phase on every timed step "
        + "(the seed copies the whole state_dict for its first 2000 steps, so that is what a short run sees; `--seed-ema-phase average` times the averaging).",
        "Course: same UNet (SDPA attention, broadcast time embedding), "
        + (f"{results['train'][0]['course'].get('precision', '')} autocast, channels_last, fused AdamW" if dev.startswith('cuda') else f"{results['train'][0]['course'].get('precision', 'fp32')}, contiguous, fused AdamW (channels_last is GPU-only here)")
        + ", foreach EMA (decay 0.999), per-sample label dropout (p 0.1), t in [0, T), OneCycleLR.",
        "FLOPs: torch.utils.flop_counter.FlopCounterMode on the first warm-up step (one forward + backward of the full batch; "
        "matmuls, convolutions, attention); TFLOP/s = FLOPs per step / timed seconds per step. The compiled row uses the uncompiled count.",
        "Peak memory: " + Memory(torch.device(dev)).method + ". It covers the model, optimizer state, EMA copy, activations and gradients.",
    ]
    if sm:
        notes.append(f"Sampling: untrained weights (speed does not depend on them), labels 0..{sm['n'] - 1}, guidance {sm['guidance']:g} "
                     "(the seed's cfg_scale: one conditional and one unconditional call per step; the course's guided model (chapter 09): one call on "
                     "a doubled batch), torch.inference_mode(), " + ('bf16 autocast for the course, fp32 for the seed (it has no autocast)'
                                                                     if dev.startswith('cuda') else 'fp32') + ". "
                     + ("The seed's time is extrapolated linearly in steps from the steps actually run (--seed-sample-steps). " if sm['seed'].get('extrapolated') else '')
                     + f"The course's step count ({args.course_steps}) is a flag; whether its FID is no worse than the seed's 1000 steps is measured in chapters 10 and 11, not here.")
    loads = [float(v.split()[0]) for v in (results['loadavg_start'], results['loadavg_end']) if v]
    if loads and not dev.startswith('cuda') and max(loads) > 2:
        notes.append(f"CPU figures taken on a shared, loaded machine (1-minute load average {results['loadavg_start'].split()[0]} at start, "
                     f"{(results['loadavg_end'] or '?').split()[0]} at end, on {m['cpu_count']} CPUs): other processes competed for the cores, so "
                     "absolute numbers are low and noisy; the ratios, measured in the same run, are the more useful part.")
    if results.get('auto_threads'):
        notes.append("Torch threads set to 1 automatically: the load average at start was above the CPU count, and several OpenMP "
                     "threads on an oversubscribed machine stall each other (a step can take 10x longer); pass --threads N to override.")
    if loads and not dev.startswith('cuda') and m['threads'] > 1 and max(loads) > m['cpu_count']:
        notes.append(f"{m['threads']} torch threads on an oversubscribed machine (load above {m['cpu_count']} CPUs): OpenMP threads wait for each "
                     "other at every parallel region and a descheduled thread stalls them all; `--threads 1` measures the code rather than the contention.")
    if not dev.startswith('cuda'):
        notes.append("GPU: not measured in this run; run `python bench/bench.py --device cuda` on a GPU machine.")
    return '\n'.join(lines + [f"- {n}" for n in notes]) + '\n'

# ---------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--device', default=None, help="'cpu', 'cuda' or 'cuda:N' (default: cuda if available)")
    p.add_argument('--sizes', type=int, nargs='+', default=[32, 64], help='training image sizes')
    p.add_argument('--batch', type=int, nargs='+', default=None,
                   help='batch size per size (one value for all, or one per size); default GPU 128 at 32 and 64 at 64, CPU 8 at 32 and 4 at 64')
    p.add_argument('--iters', type=int, default=None, help='timed training steps (default GPU 30, CPU 2)')
    p.add_argument('--warmup', type=int, default=None, help='untimed warm-up steps, at least 1 (default GPU 5, CPU 1)')
    p.add_argument('--compile', action='store_true', help='also time the course step with torch.compile')
    p.add_argument('--skip-sampling', action='store_true')
    p.add_argument('--sample-n', type=int, default=None, help='images per sampling batch (default GPU 10, CPU 2)')
    p.add_argument('--sample-size', type=int, default=32)
    p.add_argument('--seed-sample-steps', type=int, default=None,
                   help="steps of the seed's 999-step loop to run; the time is extrapolated linearly to 999 (default GPU all, CPU 10)")
    p.add_argument('--course-steps', type=int, default=50, help='DDIM steps of the course sampler')
    p.add_argument('--guidance', type=float, default=3., help="guidance scale w of both samplers (the seed's default cfg_scale is 3)")
    p.add_argument('--seed-ema-phase', choices=['copy', 'average'], default='copy',
                   help="which phase of the seed's EMA to time: 'copy' (its first 2000 steps, what a short run sees) or 'average'")
    p.add_argument('--threads', type=int, default=None,
                   help='torch.set_num_threads (default: as is, but 1 on a CPU run when the load average is above the CPU count)')
    p.add_argument('--graph-breaks', action='store_true', help='print the graph breaks of the hot paths (torch._dynamo.explain) and stop')
    p.add_argument('--precisions', nargs='+', default=None, choices=['fp32', 'bf16', 'fp16'],
                   help='compare these precisions side by side (speed, loss, samples) on the default job, instead of the seed comparison')
    p.add_argument('--precision-steps', type=int, default=60, help='training steps of each precision in --precisions')
    p.add_argument('--precision-sample-steps', type=int, default=20, help='DDIM steps of the samples in --precisions')
    p.add_argument('--out', default=None, help='write the results: a .json file (numbers + the Markdown table) or a Markdown file')
    return p.parse_args(argv)

def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    la_start = loadavg()
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    auto_threads = None
    if args.threads is None and device.type == 'cpu' and la_start and float(la_start.split()[0]) > (os.cpu_count() or 1) \
            and torch.get_num_threads() > 1:
        args.threads = auto_threads = 1     # OpenMP threads stall each other on an oversubscribed machine (see README)
    if args.threads: torch.set_num_threads(args.threads)
    if device.type == 'cuda' and not torch.cuda.is_available(): sys.exit('--device cuda given but CUDA is not available')
    gpu = device.type == 'cuda'
    if gpu: torch.cuda.set_device(device)
    defaults = {32: 128, 64: 64} if gpu else {32: 8, 64: 4}
    if args.batch is None: batches = [defaults.get(S, defaults[64] if S > 32 else defaults[32]) for S in args.sizes]
    elif len(args.batch) == 1: batches = args.batch * len(args.sizes)
    elif len(args.batch) == len(args.sizes): batches = args.batch
    else: sys.exit(f"--batch takes one value or one per size ({len(args.sizes)}), got {args.batch}")
    args.iters = args.iters or (30 if gpu else 2)
    args.warmup = max(1, args.warmup if args.warmup is not None else (5 if gpu else 1))
    args.sample_n = args.sample_n or (10 if gpu else 2)
    if args.seed_sample_steps is None: args.seed_sample_steps = None if gpu else 10
    log = lambda *a: print(*a, file=sys.stderr, flush=True)
    if args.graph_breaks or args.precisions:
        results, md = dict(machine=machine_info(device), loadavg_start=la_start), ''
        if args.graph_breaks: md += graph_break_table(device)
        if args.precisions:
            log(f"precisions {args.precisions} on {device}, {args.precision_steps} steps each ...")
            results['precision'], table = precision_compare(args.precisions, device, args.precision_steps, args.precision_sample_steps, log)
            md += ('\n' if md else '') + table
        md += f"\nMachine: {results['machine']}; load average {la_start} at the start, {loadavg()} at the end.\n"
        return report(results, md, args.out, log)
    mem = Memory(device)
    results = dict(machine=machine_info(device), loadavg_start=la_start, args=vars(args), memory_method=mem.method, train=[],
                   auto_threads=auto_threads)
    log(f"machine: {results['machine']}; load average {la_start}")
    total_steps = args.warmup + args.iters + 1
    for S, B in zip(args.sizes, batches):
        torch.manual_seed(0); np.random.seed(0)
        x0 = (torch.rand(B, 3, S, S, device=device) * 2 - 1)             # a fixed batch in [-1, 1], already on the device
        y = torch.randint(0, NUM_CLASSES, (B,), device=device)
        row = dict(size=S, batch=B)
        for name, make, count in (('seed', lambda: SeedTrainer(S, device, total_steps, args.seed_ema_phase), True),
                                  ('course', lambda: CourseTrainer(S, device, total_steps), True),
                                  ('compile', lambda: CourseTrainer(S, device, total_steps, compile=True), False)):
            if name == 'compile' and not args.compile: continue
            log(f"train {S}x{S} batch {B}: {name} ...")
            t0 = time.perf_counter()
            r = measure_train(make, x0, y, args.warmup, args.iters, device, mem, count, log)
            if name == 'compile':
                if 'failed' in r: r['failed'] = 'failed: ' + r['failed'].removeprefix('failed: ')
                torch._dynamo.reset()
                r['flops_per_step'] = row['course'].get('flops_per_step')
            if name != 'seed': r['precision'] = resolve_precision('auto', device)
            if r.get('flops_per_step') and r.get('step_s'): r['tflops'] = r['flops_per_step'] / r['step_s'] / 1e12
            row[name] = r
            log(f"    {', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in r.items())} ({time.perf_counter() - t0:.0f} s)")
        row.setdefault('compile', None)
        results['train'].append(row)
    if not args.skip_sampling:
        log(f"sampling {args.sample_n} images at {args.sample_size}x{args.sample_size} ...")
        t0 = time.perf_counter()
        results['sampling'] = measure_sampling(args, device, mem, log)
        log(f"    {results['sampling']} ({time.perf_counter() - t0:.0f} s)")
    results['loadavg_end'] = loadavg()
    results['wall_s'] = time.perf_counter() - t_start
    return report(results, markdown(results, args), args.out, log)

def report(results: dict, md: str, out, log) -> dict:
    "Print the tables; write the numbers and the tables to `out` (.json), or the tables alone (any other name)"
    results['markdown'] = md
    print(md)
    if out:
        out = Path(out); out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=str) if out.suffix == '.json' else md)
        log(f"wrote {out}")
    return results

if __name__ == '__main__':
    main()
