"""Chapter 22's export: `ddpm_course export --format onnx` writes the denoiser and its sampling config; the graph agrees
with eager PyTorch, sampling through onnxruntime gives PyTorch's images, and `serve --backend onnx` serves them."""
import base64, contextlib, io, json
import pytest
import torch
from conftest import Server, TINY_TRAIN, PACKAGE
from harness import http
from ddpm_course.data import cached, source_key
from ddpm_course.core import to_uint8, to_unit
from ddpm_course.export import load_onnx, onnx_inputs, Denoiser, ONNX_RTOL
from ddpm_course.serve import png_image
from ddpm_course.guidance import guided
from ddpm_course.runs import load_run
from ddpm_course.sampling import sample


def _export(run, *flags) -> str:
    "`ddpm_course export --format onnx` as the console script runs it (`cli.main`), in this process: what it printed"
    from ddpm_course import cli
    out = io.StringIO()
    with contextlib.redirect_stdout(out): cli.main(['export', '--run', str(run), '--format', 'onnx', *map(str, flags)])
    return out.getvalue()


@pytest.fixture(scope='module')
def exported(tiny_run):
    "The tiny run's export by the command line: made once for every worker and for both precisions (torch.export takes about 7 s)"
    def make(folder):
        assert 'agrees with PyTorch' in _export(tiny_run, '--out', folder/'onnx')
    return cached('test-tiny-onnx', make, TINY_TRAIN, source_key(*PACKAGE))/'onnx'


def _rel(d, do, n, seed):
    ins = onnx_inputs(d, n, seed)
    with torch.no_grad(): ref = Denoiser(d.net).eval()(*ins)
    return ((do.net(*ins) - ref).abs().max() / ref.abs().max()).item()


def test_export_writes_the_graph_and_its_config(exported, tiny_run):
    cfg = json.loads((exported/'diffusion.json').read_text())
    d, run_cfg = load_run(tiny_run)
    assert cfg['schedule'] == run_cfg['schedule'] and cfg['pred_type'] == run_cfg['pred_type'] and cfg['model'] == run_cfg['model']
    assert cfg['onnx']['inputs'] == ['x_t', 't', 'y'] and cfg['onnx']['check']['max_rel'] <= ONNX_RTOL
    do = load_onnx(exported)
    assert (do.num_classes, do.shape, do.pred_type, do.sched.T) == (d.num_classes, d.shape, d.pred_type, d.sched.T)


@pytest.mark.parametrize('n, seed', [(1, 10), (7, 11), (64, 12)])
def test_the_graph_agrees_with_pytorch(exported, tiny_run, n, seed):
    "Fresh inputs, other batch sizes than the export's check used: within 1e-4 of the largest output"
    assert _rel(load_run(tiny_run)[0], load_onnx(exported), n, seed) <= ONNX_RTOL


@pytest.mark.precision
@pytest.mark.parametrize('sampler', ['dpmpp_2m', 'ddim', 'heun'])
def test_sampling_through_onnxruntime_gives_pytorchs_images(exported, tiny_run, sampler):
    "onnxruntime runs the graph in float32, and `sample` from Python samples PyTorch's side in float32 too (whatever this CPU's auto would be)"
    d, do = load_run(tiny_run)[0], load_onnx(exported)
    y = torch.arange(10).repeat(2)
    x, xo = sample(guided(d), labels=y, sampler=sampler, seed=0), sample(guided(do), labels=y, sampler=sampler, seed=0)
    lv = (to_uint8(to_unit(x)).int() - to_uint8(to_unit(xo)).int()).abs()
    assert (x - xo).abs().max() < 1e-2 and lv.max() <= 2 and (lv > 0).float().mean() < 0.01


def test_unconditional_export(tiny_urun):
    _export(tiny_urun)
    do = load_onnx(tiny_urun/'onnx')
    assert do.num_classes is None and do.net.inputs == ['x_t', 't']
    assert _rel(load_run(tiny_urun)[0], do, 5, 3) <= ONNX_RTOL


def test_serve_the_export(exported, tiny_run):
    s = Server(tiny_run, '--backend', 'onnx', '--onnx-dir', exported)
    try:
        status, _, raw = http('POST', s.url + '/v1/samples', {'label': 6, 'n': 3, 'seed': 4})
        got = torch.stack([png_image(base64.b64decode(b)) for b in json.loads(raw)['images']])
        want = to_uint8(to_unit(sample(guided(load_onnx(exported)), labels=[6] * 3, seed=4)))       # (onnxruntime: float32 on both sides)
        assert status == 200 and (got.int() - want.int()).abs().max() <= 1
        assert json.loads(http('GET', s.url + '/v1/model')[2])['backend'] == 'onnx'
    finally: s.stop()


def test_a_broken_export_is_one_message(exported, tmp_path):
    (tmp_path/'model.onnx').write_bytes(b'not a graph'); (tmp_path/'diffusion.json').write_text((exported/'diffusion.json').read_text())
    with pytest.raises(ValueError, match='cannot be loaded by onnxruntime'): load_onnx(tmp_path)
    (tmp_path/'diffusion.json').write_text('{')
    with pytest.raises(ValueError, match='is not valid JSON'): load_onnx(tmp_path)
