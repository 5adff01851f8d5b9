"""Chapter 06's DPM-Solver++(2M) and Heun samplers against diffusers' own schedulers, an independent implementation
(diffusers is a test-only dependency, in the [dev] extra). Both are driven with the same model function, the same
timesteps and the same starting noise, and must land on the same samples.

Tolerances, from measurements on this machine (torch 2.14.1, CPU, float32): on the linear schedule the two agree within
3e-6 (DPM-Solver++) and 2e-4 (Heun, whose diffusers loop keeps the sample as x_t / sqrt(abar_t), up to 157), and we
allow 2e-5 and 3e-4. On the cosine schedule an eps-model's x0_hat at t = 999 is (x_t - sqrt(1 - abar) eps) / sqrt(abar)
with 1 / sqrt(abar) = 20,000: float32's last digit of sqrt(1 - abar), which each library computes its own way, comes
back as about 1e-3 (chapter 07, "An imperfect model"). There they agree within 4e-3 and we allow 6e-3. (Heun is
checked on the linear schedule only: diffusers keeps its cosine sample near 20,000, with three decimals left.)"""
import pytest, torch
from ddpm_course.schedules import make_schedule, gaussian_denoiser
from ddpm_course.models import make_unet
from ddpm_course.diffusion import Diffusion
from ddpm_course.sampling import sample, timesteps_for, levels_for

MU, SIGMA = 0.3, 0.5
PRED = {'eps': 'epsilon', 'v': 'v_prediction'}


def model_fn(kind: str, sched, pred_type: str):
    "A model function (x_t, t) -> prediction: the exact Gaussian denoiser (linear in x_t), or it plus a random UNet's output (not linear)"
    exact = gaussian_denoiser(MU, SIGMA, sched, pred_type)
    if kind == 'gaussian': return exact
    torch.manual_seed(0)
    net = make_unet('tiny', c_in=1, img_size=(16, 16)).eval()
    return lambda x, t: exact(x, t) + 0.1 * net(x, t).float()      # samples of the size of data, from a model that is not linear


def run_diffusers(scheduler, fn, ts, x_T):
    "diffusers' sampling loop: scale the input, call the model at each of the scheduler's timesteps, step"
    scheduler.set_timesteps(timesteps=ts)
    x = x_T * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(x, t)
            x = scheduler.step(fn(x_in, torch.full((len(x),), int(t))), t, x).prev_sample
    return x


def ours(fn, sched, pred_type, sampler, steps, spacing, x_T):
    d = Diffusion(fn, sched, pred_type, channels=x_T.shape[1], img_size=tuple(x_T.shape[2:]))
    with torch.no_grad(): return sample(d, steps=steps, sampler=sampler, spacing=spacing, clip_x0=None, x_T=x_T)   # (float32, as diffusers runs)


@pytest.mark.parametrize('schedule,tol', [('linear', 2e-5), ('cosine', 6e-3)])
@pytest.mark.parametrize('kind,pred_type', [('gaussian', 'eps'), ('gaussian', 'v'), ('unet', 'eps')])
@pytest.mark.parametrize('steps,spacing', [(5, 'trailing'), (10, 'trailing'), (20, 'trailing'), (20, 'karras')])
def test_dpmpp_2m_matches_diffusers(schedule, tol, kind, pred_type, steps, spacing):
    sched = make_schedule(schedule)
    fn = model_fn(kind, sched, pred_type)
    x_T = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    ts = timesteps_for(sched.T, steps, spacing, sched)
    from diffusers import DPMSolverMultistepScheduler       # (imported here: only the worker that runs these tests pays for it)
    ref = run_diffusers(DPMSolverMultistepScheduler(
        num_train_timesteps=sched.T, trained_betas=sched.betas.numpy(), prediction_type=PRED[pred_type], solver_order=2,
        algorithm_type='dpmsolver++', solver_type='midpoint', lower_order_final=True, final_sigmas_type='zero'), fn, ts, x_T)
    got = ours(fn, sched, pred_type, 'dpmpp_2m', steps, spacing, x_T)
    assert (got - ref).abs().max().item() < tol
    # and the check can fail: DDIM, the first-order method, is far from diffusers' second-order answer
    assert (ours(fn, sched, pred_type, 'ddim', steps, spacing, x_T) - ref).abs().max().item() > 10 * tol


@pytest.mark.parametrize('kind,pred_type', [('gaussian', 'eps'), ('gaussian', 'v'), ('unet', 'eps')])
@pytest.mark.parametrize('calls,spacing', [(9, 'karras'), (19, 'karras'), (35, 'karras'), (19, 'trailing')])
def test_heun_matches_diffusers(kind, pred_type, calls, spacing):
    sched = make_schedule('linear')
    fn = model_fn(kind, sched, pred_type)
    x_T = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    ts = timesteps_for(sched.T, levels_for('heun', calls), spacing, sched)
    from diffusers import HeunDiscreteScheduler
    sch = HeunDiscreteScheduler(num_train_timesteps=sched.T, trained_betas=sched.betas.numpy(), prediction_type=PRED[pred_type])
    ref = run_diffusers(sch, fn, ts, x_T)
    assert len(sch.timesteps) == calls                      # diffusers calls the model as often as we count
    got = ours(fn, sched, pred_type, 'heun', calls, spacing, x_T)
    assert (got - ref).abs().max().item() < 3e-4
    assert (ours(fn, sched, pred_type, 'ddim', len(ts), spacing, x_T) - ref).abs().max().item() > 3e-3
