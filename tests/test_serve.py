"""Chapter 12's service, for real: `ddpm_course serve` in its own process on a free loopback port, spoken to over HTTP by
a real client (the standard library's urllib): every endpoint, the bad-request sweep, the metrics, a bounded load test,
Ctrl-C, and the errors a user can cause when starting it."""
import base64, json, subprocess, sys
import pytest
import torch
from conftest import EXE, Server, run_shell
from ddpm_course.data import to_uint8, to_unit, grid_cols
from ddpm_course.deploy import http, load_test, read_metrics, png_image, grid_png, bind_socket
from ddpm_course.runs import load_run, read_config
from ddpm_course.sampling import sample, DEFAULT_SAMPLER, DEFAULT_STEPS
from ddpm_course.diffusion import resolve_precision

MAX_N = 8


@pytest.fixture(scope='module')
def server(tiny_run):
    s = Server(tiny_run, '--max-n', MAX_N, '--timeout', 60)
    yield s
    code, out = s.stop()
    assert code == 0 and 'stopped' in out and 'Traceback' not in out, out      # Ctrl-C: a clean stop, not a traceback


@pytest.fixture(scope='module')
def userver(tiny_urun):
    "An unconditional model, served with a timeout no request can meet (each waits 5 ms for its batch to fill)"
    s = Server(tiny_urun, '--timeout', 0.001)
    yield s
    s.stop()


def _json(url, body=None, method=None):
    status, head, raw = http(method or ('GET' if body is None else 'POST'), url, body)
    return status, json.loads(raw)


def _images(ans) -> torch.Tensor: return torch.stack([png_image(base64.b64decode(s)) for s in ans['images']])


def _close(a: torch.Tensor, b: torch.Tensor):
    "uint8 images equal but for rounding: at most one level apart, at under 0.5% of the pixels (the server runs 1 thread, this process more)"
    diff = (a.int() - b.int()).abs()
    assert a.shape == b.shape and diff.max() <= 1 and (diff > 0).float().mean() < 0.005, (diff.max(), (diff > 0).float().mean())


def test_healthz_and_model_card(server, tiny_run):
    assert server.url.startswith('http://127.0.0.1:')                             # loopback unless told otherwise
    status, ans = _json(server.url + '/healthz'); assert (status, ans['status']) == (200, 'ok')
    status, card = _json(server.url + '/v1/model'); cfg = read_config(tiny_run)
    assert status == 200
    assert card['classes'] == cfg['data']['vocab'] and card['conditional'] and card['image_size'] == [16, 16] and card['channels'] == 1
    assert card['pred_type'] == cfg['pred_type'] and card['schedule']['T'] == 50 == card['limits']['max_steps']
    assert (card['default_sampler'], card['default_steps'], card['limits']['max_n']) == (DEFAULT_SAMPLER, DEFAULT_STEPS, MAX_N)
    assert card['training']['epochs'] == 1 and card['training']['valid_loss'] > 0 and card['backend'] == 'torch'
    assert card['precision'] == resolve_precision('auto', 'cpu')                       # (DDPM_CPU_BF16 reaches the server too)


@pytest.mark.precision
def test_samples_are_those_of_the_python_api(server, tiny_run):
    "The service samples at `serve --precision auto` (its default), so the images to compare are `sample`'s at auto"
    d, _ = load_run(tiny_run)
    status, ans = _json(server.url + '/v1/samples', {'label': 3, 'n': 4, 'seed': 5})
    assert status == 200 and (ans['labels'], ans['seed'], ans['n'], ans['guidance']) == ([3] * 4, 5, 4, 3.)
    got = _images(ans)
    _close(got, to_uint8(to_unit(sample(d, labels=[3] * 4, seed=5, precision='auto'))))
    assert torch.equal(_images(_json(server.url + '/v1/samples', {'label': 3, 'n': 4, 'seed': 5})[1]), got)   # same request, same images
    status, ans = _json(server.url + '/v1/samples', {'labels': [0, 9], 'sampler': 'ddim', 'steps': 20, 'guidance': 1.5, 'seed': 2})
    _close(_images(ans), to_uint8(to_unit(sample(d, labels=[0, 9], sampler='ddim', steps=20, guidance=1.5, seed=2, precision='auto'))))
    status, ans = _json(server.url + '/v1/samples', {'label': 1})                  # no seed: one is drawn and reported
    assert ans['n'] == 1 and torch.equal(_images(ans), _images(_json(server.url + '/v1/samples', {'label': 1, 'seed': ans['seed']})[1]))


def test_samples_png_is_the_grid_of_those_images(server):
    status, head, png = http('GET', server.url + '/v1/samples.png?label=2&n=6&seed=3&guidance=2')
    assert status == 200 and head['content-type'] == 'image/png' and (head['x-seed'], head['x-labels']) == ('3', '2,2,2,2,2,2')
    ans = _json(server.url + '/v1/samples', {'label': 2, 'n': 6, 'seed': 3, 'guidance': 2})[1]
    assert png == grid_png(_images(ans))
    g = png_image(png); cols = grid_cols(6)
    assert g.shape[-2:] == (2 + 2 * 66, 2 + cols * 66)                                # 16 px enlarged 4x, 2 px apart


def test_page(server):
    status, head, raw = http('GET', server.url + '/')
    page = raw.decode()
    assert status == 200 and head['content-type'].startswith('text/html')
    for part in ('id="label"', 'id="guidance"', 'type="range"', 'id="steps"', 'id="seed"', 'id="go"', '/v1/samples.png', '/v1/model'): assert part in page


BAD = [  # (body, status, field, words of the message)
    ({'label': 10}, 422, 'label', 'from 0 to 9'),
    ({'label': -1}, 422, 'label', 'from 0 to 9'),
    ({'labels': [1, 99]}, 422, 'labels', 'from 0 to 9'),
    ({'label': 1, 'n': MAX_N + 1}, 422, 'n', f'from 1 to {MAX_N}'),
    ({'n': 0}, 422, 'n', f'from 1 to {MAX_N}'),
    ({'labels': list(range(MAX_N + 1))}, 422, 'labels', f'1 to {MAX_N}'),
    ({'label': 1, 'guidance': -0.5}, 422, 'guidance', 'from 0 to 20'),
    ({'guidance': 2}, 422, 'guidance', 'needs labels'),
    ({'steps': 51}, 422, 'steps', 'from 1 to 50'),
    ({'steps': 0}, 422, 'steps', 'from 1 to 50'),
    ({'sampler': 'euler'}, 422, 'sampler', 'one of ddim, ddpm, dpmpp_2m, heun'),
    ({'seed': -1}, 422, 'seed', 'whole number'),
    ({'n': 'four'}, 422, 'n', 'whole number'),
    ({'label': 1, 'labels': [1]}, 422, 'labels', 'not both'),
    ({'guidence': 3}, 422, 'guidence', 'not a field'),
    ([1, 2], 422, 'body', 'JSON object'),
    (b'{"label": 3,', 400, 'body', 'not valid JSON'),
    (b'\xff\xfe', 400, 'body', 'not valid JSON'),
]


@pytest.mark.parametrize('body, status, field, words', BAD)
def test_bad_requests_get_a_4xx_naming_the_field(server, body, status, field, words):
    got, ans = _json(server.url + '/v1/samples', body, 'POST')
    assert (got, ans['error']['field']) == (status, field) and words in ans['error']['message'], ans


@pytest.mark.parametrize('query, field', [('label=three', 'label'), ('label=1&guidance=nan', 'guidance'), ('labels=1,x', 'labels'),
                                          ('label=1&n=9', 'n'), ('label=1&steps=51', 'steps')])
def test_bad_query_strings(server, query, field):
    status, ans = _json(server.url + '/v1/samples.png?' + query)
    assert status == 422 and ans['error']['field'] == field


def test_unconditional_model_refuses_labels_and_times_out_cleanly(userver):
    status, card = _json(userver.url + '/v1/model'); assert not card['conditional'] and card['classes'] == []
    status, ans = _json(userver.url + '/v1/samples', {'label': 3})
    assert status == 422 and ans['error']['field'] == 'label' and 'unconditional' in ans['error']['message']
    status, ans = _json(userver.url + '/v1/samples', {'n': 2})
    assert status == 503 and 'timeout of 0.001 s' in ans['error']['message']
    status, _ = _json(userver.url + '/healthz'); assert status == 200              # the server is still there


def test_not_found_and_wrong_method_are_json(server):
    status, ans = _json(server.url + '/v2/nothing'); assert status == 404 and ans
    status, ans = _json(server.url + '/v1/samples'); assert status == 405


def test_metrics_count_requests_images_and_batches(server):
    before = read_metrics(http('GET', server.url + '/metrics')[2].decode())
    for body in ({'label': 4, 'n': 3, 'seed': 1}, {'label': 5, 'seed': 2}, {'label': 11}):
        http('POST', server.url + '/v1/samples', body)
    after = read_metrics(http('GET', server.url + '/metrics')[2].decode())
    delta = lambda k: after.get(k, 0) - before.get(k, 0)
    assert delta('ddpm_requests_total{endpoint="/v1/samples",status="200"}') == 2
    assert delta('ddpm_requests_total{endpoint="/v1/samples",status="422"}') == 1
    assert delta('ddpm_images_total') == 4 and delta('ddpm_batch_images_sum') == 4 and delta('ddpm_batch_images_count') == 2
    assert delta('ddpm_request_seconds_count{endpoint="/v1/samples"}') == 3
    assert after['ddpm_request_seconds_bucket{endpoint="/v1/samples",le="+Inf"}'] == after['ddpm_request_seconds_count{endpoint="/v1/samples"}']


def _load(url) -> float:
    "24 requests, 8 at a time, on loopback: all answered; the mean images per sampler call while they ran"
    r = load_test(url + '/v1/samples', lambda i: {'label': i % 10, 'seed': i, 'steps': 20}, requests=24, concurrency=8, timeout=120)
    assert r['statuses'] == {200: 24} and r['requests'] == 24 and r['p95_ms'] >= r['p50_ms'] > 0
    assert abs(r['sampler_calls'] * r['mean_batch'] - 24) < 1e-6            # every image counted in one sampler call
    return r['mean_batch']


def test_bounded_load_is_batched(server, tiny_run):
    "With micro-batching the sampler calls hold several requests under load; with --max-batch 1, one each"
    assert _load(server.url) > 1.5
    s = Server(tiny_run, '--max-batch', '1')
    try: assert _load(s.url) == 1
    finally: s.stop()


def test_serve_errors_are_one_line(tiny_run, tmp_path, monkeypatch, capsys):
    "As the console script runs them (in this process): one line and exit code 1, before the model loads"
    busy = bind_socket('127.0.0.1', 0); port = busy.getsockname()[1]
    try: code, out = run_shell(['serve', '--run', tiny_run, '--port', port], monkeypatch, capsys)
    finally: busy.close()
    assert code == 1 and f'port {port} on 127.0.0.1 is in use' in out and 'Traceback' not in out, out
    for flags, words in [(['--run', tmp_path/'nope'], 'does not exist'), (['--run', tiny_run, '--max-n', '0'], '--max-n must be at least 1'),
                         (['--run', tiny_run, '--backend', 'onnx', '--onnx-dir', tmp_path], 'export the run first'),
                         (['--run', tiny_run, '--host', 'no.such.host.invalid'], 'is not an address of this machine'),
                         (['--run', tiny_run, '--port', '70000'], '--port must be in 0..65535')]:
        code, out = run_shell(['serve', *flags], monkeypatch, capsys)
        assert code == 1 and words in out and 'Traceback' not in out and out.count('\n') == 1, (flags, out)


BLOCK_EXTRAS = "import sys\nfor m in ('fastapi', 'uvicorn', 'prometheus_client', 'onnx', 'onnxscript', 'onnxruntime'): sys.modules[m] = None\n"


def test_the_package_imports_without_the_serve_extra(tiny_run):
    code = BLOCK_EXTRAS + "import ddpm_course.deploy, ddpm_course.cli\nsys.argv = ['ddpm_course', 'serve', '--run', sys.argv[1]]\nddpm_course.cli.main()"
    r = subprocess.run([sys.executable, '-c', code, str(tiny_run)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "pip install 'ddpm_course[serve]'" in r.stderr and 'Traceback' not in r.stderr, r.stderr
