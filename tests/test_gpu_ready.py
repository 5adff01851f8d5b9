"""GPU-ready without a GPU. The hot paths trace as one graph each under torch._dynamo.explain (what torch.compile would
see; the UNet's forward pass alone, and a middle step of most samplers, are traced by chapter 18 itself), and a
sampling loop reads nothing back from the device per step. Reads are counted by patching the Tensor methods that move values
to the host (chapter 18's `count_host_reads`); each check is also shown to fail on code that does break or read. (That a
whole training fit reads only at the logging interval, and that the count catches a per-step read there, is chapter 20's.)"""
import pytest
import torch
from ddpm_course.schedules import make_schedule
from ddpm_course.models import make_unet
from ddpm_course.diffusion import Diffusion
from ddpm_course.sampling import sample, sample_step, timesteps_for, respace_schedule, dpmpp_ratios
from ddpm_course.guidance import guided
from ddpm_course.training import DDPMCallback, weighted_mse
from ddpm_course.conditional import drop_labels
from ddpm_course.speed import graph_breaks, count_host_reads

SCHED = make_schedule('cosine', 1000)


@pytest.fixture(scope='module')
def unet():
    torch.manual_seed(0)
    return make_unet('tiny', c_in=1, img_size=(16, 16), num_classes=10)


@pytest.mark.parametrize('pred_type', ['eps', 'v'])
def test_training_step_is_one_graph(unet, pred_type):
    ddpm = DDPMCallback(SCHED, pred_type, min_snr_gamma=5.).setup(unet)
    def step(x0, y):
        t, eps = torch.randint(0, SCHED.T, (len(x0),)), torch.randn_like(x0)
        xb, yb = ddpm.make_batch(x0, drop_labels(y, 0.1, unet.null_class), t, eps)      # (chapter 10's label dropout, as LabelDropout does it)
        return weighted_mse(unet(*xb), *yb)
    assert graph_breaks(step, torch.rand(8, 1, 16, 16) * 2 - 1, torch.randint(0, 10, (8,))) == (0, [])


# Each sampler's step with the default pred_type (v), and each pred_type's conversions with one sampler: the cases that can break
# differently (the pred_type code is shared by every sampler, through `denoise`; the full grid of 18 traced the same code 3 times)
SAMPLER_CASES = [('v', dict(sampler='ddim')), ('v', dict(sampler='ddim', eta=1.)), ('v', dict(sampler='ddim', clip_x0=None)), ('v', dict(sampler='ddpm')),
                 ('v', dict(sampler='dpmpp_2m')), ('v', dict(sampler='heun')), ('v', dict(sampler='sde')), ('eps', dict(sampler='ddim')), ('x0', dict(sampler='ddim'))]

@pytest.mark.parametrize('pred_type, kw', SAMPLER_CASES, ids=['v-ddim', 'v-ddim-eta1', 'v-ddim-noclip', 'v-ddpm', 'v-dpmpp_2m', 'v-heun', 'v-sde', 'eps-ddim', 'x0-ddim'])
def test_sampler_step_with_guidance_is_one_graph(unet, kw, pred_type):
    d, ts = Diffusion(unet.eval(), SCHED, pred_type), timesteps_for(SCHED.T, 20)
    if kw['sampler'] == 'ddpm': kw = {**kw, 'sub': respace_schedule(SCHED, ts)}
    if kw['sampler'] == 'dpmpp_2m': kw = {**kw, 'x0_last': torch.randn(4, 1, 16, 16), 'ratios': dpmpp_ratios(SCHED, ts)}
    # the last step (its own branch: x0) of each; the noisiest step takes the path of the steps in between, which chapter 18 traces
    # for DDIM (eta 0 and 0.5, and without clipping), DDPM, DPM-Solver++ and Heun with a v-model: here, the noisiest step of the
    # others (the SDE sampler, and an eps- and an x0-model), and DPM-Solver++'s first (first-order) and second-order steps
    last = len(ts) - 1
    if kw['sampler'] == 'dpmpp_2m': ks = (0, 7, last)
    elif kw['sampler'] == 'sde' or pred_type != 'v': ks = (0, last)
    else: ks = (last,)
    for k in ks:
        assert graph_breaks(lambda x, y: sample_step(guided(d, 3.), x, k, ts, y, **kw), torch.randn(4, 1, 16, 16), torch.tensor([1, 2, 3, 4])) == (0, [])


def test_graph_check_catches_a_break():
    def reads_back(x):
        if x.max() > 0: return x * 2                             # a data-dependent branch: what q_sample used to do
        return x
    n, reasons = graph_breaks(reads_back, torch.randn(3))
    assert n == 1 and reasons


@pytest.mark.parametrize('kw', [dict(), dict(sampler='ddim'), dict(sampler='ddim', eta=0.5), dict(sampler='ddpm'), dict(sampler='heun'),
                                dict(sampler='sde'), dict(guidance=0.), dict(clip_x0=None)])
def test_sampling_reads_nothing_per_step(unet, kw):
    kw = dict(kw); d = guided(Diffusion(unet.eval(), SCHED, 'v'), kw.pop('guidance', None))
    def reads(steps):
        with count_host_reads() as r: sample(d, labels=[0, 1, 2], steps=steps, seed=0, **kw)
        return r
    few, many = reads(4), reads(40)
    assert len(few) == len(many), f"host reads grow with the steps: {len(few)} at 4 steps, {len(many)} at 40; e.g. {many[:5]}"


@pytest.mark.parametrize('busy, env, policy', [(1.0, None, 'PASSIVE'), (0.0, None, 'None'), (None, None, 'None'), (1.0, 'ACTIVE', 'ACTIVE')])
def test_the_command_line_sets_the_wait_policy_before_torch_loads(busy, env, policy):
    "A command starts PyTorch after setting OpenMP's wait policy for the machine: PASSIVE when a core is busy, OpenMP's own otherwise; the user's wins"
    import os, subprocess, sys
    code = ("import os, sys, ddpm_course.cli as cli\n"
            "assert 'torch' not in sys.modules, 'the command line imports torch before it can set OpenMP up'\n"
            f"cli.busy_cores = lambda: {busy}\n"
            "n = cli.start_torch(None); print(os.environ.get('OMP_WAIT_POLICY'), n)")
    e = {k: v for k, v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'OMP_NUM_THREADS')} | ({'OMP_WAIT_POLICY': env} if env else {})
    got, threads = subprocess.run([sys.executable, '-c', code], env=e, capture_output=True, text=True, check=True).stdout.split()
    assert got == policy and int(threads) >= 1
