"""Flow matching (chapter 12) through the command line: a tiny run trained by `ddpm_course train --objective flow`,
and every command that reads a run (sample, inpaint, edit, evaluate, export, the service) working on it unchanged.
No test passes the schedule or the prediction type: each command reads them from the run, and the tests check that it did."""
import base64, json
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from conftest import TINY_TRAIN, run_shell, shared_run, copy_of_run
from ddpm_course.cli import make_parser
from ddpm_course.core import to_uint8, to_unit
from ddpm_course.runs import load_run, read_config
from ddpm_course.sampling import sample
from ddpm_course.guidance import guided
from ddpm_course.machine import autocast_for

FLOW_TRAIN = [*TINY_TRAIN, '--objective', 'flow']        # one epoch of 200 digits at T = 50, conditional: the tests' tiny run


@pytest.fixture(scope='module')
def flow_run(tmp_path_factory):
    "The tiny flow run, trained once by the command line (conftest's `shared_run`: chapter 01's cache); this module's copy of it"
    return copy_of_run(shared_run('test-tiny-flow', FLOW_TRAIN), tmp_path_factory, 'flow')


@pytest.fixture(scope='module')
def flow_model(flow_run): return load_run(flow_run)[0]


def _edit_files(folder: Path) -> Path:
    "A 16x16 bar (a digit-like input) and a mask of its bottom half"
    img = np.zeros((16, 16), np.uint8); img[3:13, 6:10] = 255
    Image.fromarray(img).save(folder/'in.png')
    m = np.zeros((16, 16), np.uint8); m[8:] = 255
    Image.fromarray(m).save(folder/'mask.png')
    return folder/'in.png'


def test_the_run_is_a_flow_run(flow_run, flow_model):
    "--objective flow alone set the schedule and the prediction type, and they are saved with the run and loaded with the model"
    cfg = read_config(flow_run)
    assert (cfg['pred_type'], cfg['schedule']['name'], cfg['schedule']['zero_terminal_snr']) == ('flow', 'flow', True)
    assert (cfg['train']['objective'], cfg['train']['schedule'], cfg['train']['pred_type']) == ('flow', 'flow', 'flow')
    d = flow_model
    assert (d.pred_type, d.sched.name, d.sched.T) == ('flow', 'flow', 50) and d.sched.alpha_bar[-1].item() == 0
    t = torch.arange(50, dtype=torch.float64)
    assert torch.allclose(d.sched.alpha_bar.double().cpu(), (1 - (t + 1) / 50) ** 2 / ((1 - (t + 1) / 50) ** 2 + ((t + 1) / 50) ** 2), atol=1e-6)


def test_the_sampling_commands_take_no_schedule_or_pred_type():
    "What a run learned is not a flag of the commands that read it: it cannot be passed wrong"
    for cmd in ('sample', 'inpaint', 'edit'):
        with pytest.raises(SystemExit): make_parser().parse_args([cmd, '--run', 'r', '--pred-type', 'eps'])
        with pytest.raises(SystemExit): make_parser().parse_args([cmd, '--run', 'r', '--schedule', 'cosine'])


@pytest.mark.precision
def test_sample(flow_run, flow_model, tmp_path, monkeypatch, capsys):
    "`sample` writes the Python API's images at its precision (auto), in range; the label changes them; heun is refused with a message"
    code, out = run_shell(['sample', '--run', flow_run, '--label', '3', '--n', '4', '--seed', '7', '--out', tmp_path/'g.png',
                           '--npz', tmp_path/'g.npz'], monkeypatch, capsys)
    assert code == 0, out
    z = np.load(tmp_path/'g.npz')
    with autocast_for(flow_model.device, 'auto'): ref = sample(guided(flow_model), labels=[3] * 4, seed=7)
    assert torch.isfinite(ref).all() and ref.abs().max() <= 1
    assert (z['labels'] == 3).all() and np.array_equal(z['images'][..., 0], to_uint8(to_unit(ref))[:, 0].numpy())
    assert Image.open(tmp_path/'g.png').size[0] > 64
    x_T = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)).repeat(2, 1, 1, 1)
    x = sample(guided(flow_model), labels=[0, 0, 7, 7], x_T=x_T)       # the same two noises as a 0 and as a 7
    assert (x[:2] - x[2:]).abs().mean() > 1e-3                        # the label is read: the images differ
    code, out = run_shell(['sample', '--run', flow_run, '--sampler', 'heun', '--out', tmp_path/'h.png'], monkeypatch, capsys)
    assert code == 1 and 'zero-terminal-SNR' in out and 'Traceback' not in out and not (tmp_path/'h.png').exists(), out


def test_inpaint(flow_run, tmp_path, monkeypatch, capsys):
    "RePaint on a flow model: the kept half is the input's exactly, the filled half is finite and new"
    image = _edit_files(tmp_path)
    code, out = run_shell(['inpaint', '--run', flow_run, '--image', image, '--mask', tmp_path/'mask.png', '--n', '2', '--steps', '5',
                           '--resample', '2', '--seed', '1', '--out', tmp_path/'i.png', '--npz', tmp_path/'i.npz'], monkeypatch, capsys)
    assert code == 0, out
    z, src = np.load(tmp_path/'i.npz')['images'][..., 0], np.asarray(Image.open(image))
    assert z.shape == (2, 16, 16) and (z[:, :8] == src[:8]).all()
    assert (z[:, 8:] != src[8:]).any()


def test_edit(flow_run, tmp_path, monkeypatch, capsys):
    "SDEdit on a flow model: strength 0 gives the input back; strength 0.6 as a 7 redraws it, and the two labels give two edits"
    image = _edit_files(tmp_path); src = np.asarray(Image.open(image))
    code, out = run_shell(['edit', '--run', flow_run, '--image', image, '--strength', '0', '--out', tmp_path/'e0.png',
                           '--npz', tmp_path/'e0.npz'], monkeypatch, capsys)
    assert code == 0 and 'edits at strength 0' in out, out
    assert (np.load(tmp_path/'e0.npz')['images'][..., 0] == src).all()
    edits = {}
    for label in (1, 7):
        code, out = run_shell(['edit', '--run', flow_run, '--image', image, '--strength', '0.6', '--label', str(label), '--seed', '2',
                               '--out', tmp_path/f'e{label}.png', '--npz', tmp_path/f'e{label}.npz'], monkeypatch, capsys)
        assert code == 0, out
        edits[label] = np.load(tmp_path/f'e{label}.npz')['images'][..., 0].astype(int)
    assert (edits[7] != src).any() and np.abs(edits[1] - edits[7]).mean() > 0


def test_evaluate(flow_run, monkeypatch, capsys):
    "`evaluate` scores a flow run (with the weak judge of the tests' flags, allowed): finite metrics, written beside the run"
    code, out = run_shell(['evaluate', '--run', flow_run, '--n-per-class', '2', '--steps', '2', '--sampler', 'ddim', '--guidance', '3',
                           '--clf-epochs', '1', '--allow-weak-judge'], monkeypatch, capsys)
    assert code == 0 and 'Traceback' not in out, out
    m = json.loads((flow_run/'eval'/'metrics.json').read_text())
    assert m['conditional'] and m['n_samples'] == 20 and (m['main']['sampler'], m['main']['steps']) == ('ddim', 2)
    assert np.isfinite(m['main']['fid']) and m['main']['fid'] >= 0 and 0 <= m['main']['accuracy'] <= 1


def test_export(flow_run, flow_model, tmp_path, monkeypatch, capsys):
    "ONNX export of a flow run (`ddpm_course export` as the console script runs it): its diffusion.json says flow, and sampling the graph gives PyTorch's images"
    pytest.importorskip('onnxruntime')
    from ddpm_course.export import load_onnx
    code, out = run_shell(['export', '--run', flow_run, '--out', tmp_path/'onnx'], monkeypatch, capsys)
    assert code == 0 and 'agrees with PyTorch' in out, out
    cfg = json.loads((tmp_path/'onnx'/'diffusion.json').read_text())
    assert (cfg['pred_type'], cfg['schedule']['name'], cfg['schedule']['zero_terminal_snr']) == ('flow', 'flow', True)
    do = load_onnx(tmp_path/'onnx')
    assert (do.pred_type, do.sched.name) == ('flow', 'flow')
    y = torch.arange(10)
    for sampler in ('dpmpp_2m', 'ddim'):
        x, xo = sample(guided(flow_model), labels=y, sampler=sampler, seed=0), sample(guided(do), labels=y, sampler=sampler, seed=0)
        assert torch.isfinite(xo).all() and (x - xo).abs().max() < 1e-2, sampler


def test_the_service(flow_run, flow_model):
    "The service of a flow run: its card says flow, its images are the Python API's, and heun is a 422 that says why"
    pytest.importorskip('fastapi')
    from fastapi.testclient import TestClient
    from ddpm_course.serve import open_run, model_card, Service, make_app, png_image
    from ddpm_course.runs import load_checkpoint
    run = open_run(flow_run); d = load_checkpoint(run.config, run.ckpt)
    with TestClient(make_app(Service(d, model_card(d, run)))) as c:
        card = c.get('/v1/model').json()
        assert (card['pred_type'], card['schedule']['name'], card['schedule']['zero_terminal_snr']) == ('flow', 'flow', True)
        ans = c.post('/v1/samples', json={'label': 3, 'n': 2, 'seed': 5}).json()
        got = torch.stack([png_image(base64.b64decode(s)) for s in ans['images']])
        assert ans['labels'] == [3, 3] and torch.equal(got, to_uint8(to_unit(sample(guided(flow_model), labels=[3, 3], seed=5))))
        r = c.post('/v1/samples', json={'label': 3, 'sampler': 'heun'})
        assert r.status_code == 422 and r.json()['error']['field'] == 'sampler' and 'zero terminal SNR' in r.json()['error']['message']
