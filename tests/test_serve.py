"""Chapter 23's service. In this process, through FastAPI's `TestClient` (real HTTP requests and answers over the ASGI
interface, the app's lifespan and micro-batcher running): every endpoint, the bad-request sweep, the metrics, a timeout.
Then `ddpm_course serve` in its own process on a free loopback port, spoken to over real HTTP by the standard library:
the precision it chose, a bounded load test with and without batching, Ctrl-C, and the errors a user can cause when
starting it."""
import base64, json, subprocess, sys
import pytest
import torch
from conftest import Server, run_shell
from harness import http, load_test, read_metrics
from ddpm_course.core import to_uint8, to_unit, grid_cols
from ddpm_course.runs import read_config
from ddpm_course.sampling import sample, DEFAULT_SAMPLER, DEFAULT_STEPS
from ddpm_course.guidance import guided
from ddpm_course.machine import resolve_precision
from ddpm_course.serve import open_run, model_card, Service, make_app, png_image, grid_png, bind_socket
from ddpm_course.runs import load_checkpoint

MAX_N = 8


def _client(run_dir, **kw):
    "A TestClient of the service of `run_dir` at float32 (so that its images are `sample`'s to the bit), as `serve` builds it"
    from fastapi.testclient import TestClient
    run = open_run(run_dir); d = load_checkpoint(run.config, run.ckpt)
    return TestClient(make_app(Service(d, model_card(d, run), **kw))), d


@pytest.fixture(scope='module')
def client(tiny_run):
    c, d = _client(tiny_run, max_n=MAX_N)
    with c: yield c, d


@pytest.fixture(scope='module')
def uclient(tiny_urun):
    "An unconditional model, with a timeout no request can meet (each waits 5 ms for its batch to fill)"
    c, _ = _client(tiny_urun, timeout=0.001)
    with c: yield c


def _images(ans) -> torch.Tensor: return torch.stack([png_image(base64.b64decode(s)) for s in ans['images']])


def test_healthz_and_model_card(client, tiny_run):
    c, _ = client
    assert c.get('/healthz').json()['status'] == 'ok'
    card, cfg = c.get('/v1/model').json(), read_config(tiny_run)
    assert card['classes'] == cfg['data']['vocab'] and card['conditional'] and card['image_size'] == [16, 16] and card['channels'] == 1
    assert card['pred_type'] == cfg['pred_type'] and card['schedule']['T'] == 50 == card['limits']['max_steps']
    assert (card['default_sampler'], card['default_steps'], card['limits']['max_n']) == (DEFAULT_SAMPLER, DEFAULT_STEPS, MAX_N)
    assert card['training']['epochs'] == 1 and card['training']['valid_loss'] > 0 and card['backend'] == 'torch'


def test_samples_are_those_of_the_python_api(client):
    c, d = client
    ans = c.post('/v1/samples', json={'label': 3, 'n': 4, 'seed': 5}).json()
    assert (ans['labels'], ans['seed'], ans['n'], ans['guidance']) == ([3] * 4, 5, 4, 3.)
    got = _images(ans)
    assert torch.equal(got, to_uint8(to_unit(sample(guided(d), labels=[3] * 4, seed=5))))
    assert torch.equal(_images(c.post('/v1/samples', json={'label': 3, 'n': 4, 'seed': 5}).json()), got)     # same request, same images
    ans = c.post('/v1/samples', json={'labels': [0, 9], 'sampler': 'ddim', 'steps': 20, 'guidance': 1.5, 'seed': 2}).json()
    assert torch.equal(_images(ans), to_uint8(to_unit(sample(guided(d, 1.5), labels=[0, 9], sampler='ddim', steps=20, seed=2))))
    ans = c.post('/v1/samples', json={'label': 1}).json()                      # no seed: one is drawn and reported
    assert ans['n'] == 1 and torch.equal(_images(ans), _images(c.post('/v1/samples', json={'label': 1, 'seed': ans['seed']}).json()))


def test_samples_png_is_the_grid_of_those_images(client):
    c, _ = client
    r = c.get('/v1/samples.png?label=2&n=6&seed=3&guidance=2')
    assert r.status_code == 200 and r.headers['content-type'] == 'image/png' and (r.headers['x-seed'], r.headers['x-labels']) == ('3', '2,2,2,2,2,2')
    assert r.content == grid_png(_images(c.post('/v1/samples', json={'label': 2, 'n': 6, 'seed': 3, 'guidance': 2}).json()))
    g = png_image(r.content); cols = grid_cols(6)
    assert g.shape[-2:] == (2 + 2 * 66, 2 + cols * 66)                                # 16 px enlarged 4x, 2 px apart


def test_page(client):
    r = client[0].get('/')
    assert r.status_code == 200 and r.headers['content-type'].startswith('text/html')
    for part in ('id="label"', 'id="guidance"', 'type="range"', 'id="steps"', 'id="seed"', 'id="go"', '/v1/samples.png', '/v1/model'): assert part in r.text


BAD = [  # (body, status, field, words of the message)
    ({'label': 10}, 422, 'label', 'from 0 to 9'),
    ({'label': -1}, 422, 'label', 'from 0 to 9'),
    ({'label': 2.5}, 422, 'label', 'whole number'),
    ({'labels': [1, 99]}, 422, 'labels', 'from 0 to 9'),
    ({'label': 1, 'n': MAX_N + 1}, 422, 'n', f'from 1 to {MAX_N}'),
    ({'n': 0}, 422, 'n', f'from 1 to {MAX_N}'),
    ({'n': True}, 422, 'n', 'whole number'),
    ({'labels': list(range(MAX_N + 1))}, 422, 'labels', f'1 to {MAX_N}'),
    ({'label': 1, 'guidance': -0.5}, 422, 'guidance', 'from 0 to 20'),
    ({'guidance': 2}, 422, 'guidance', 'needs labels'),
    ({'steps': 51}, 422, 'steps', 'from 1 to 50'),
    ({'steps': 0}, 422, 'steps', 'from 1 to 50'),
    ({'sampler': 'euler'}, 422, 'sampler', 'one of ddim, ddpm, dpmpp_2m, heun'),
    ({'seed': -1}, 422, 'seed', 'whole number'),
    ({'n': 'four'}, 422, 'n', 'whole number'),
    ({'label': 1, 'labels': [1]}, 422, 'labels', 'not both'),
    ({'labels': [1, 2], 'n': 3}, 422, 'n', '2 labels were given'),
    ({'guidence': 3}, 422, 'guidence', 'not a field'),
    ([1, 2], 422, 'body', 'JSON object'),
    (b'{"label": 3,', 400, 'body', 'not valid JSON'),
    (b'\xff\xfe', 400, 'body', 'not valid JSON'),
]


@pytest.mark.parametrize('body, status, field, words', BAD)
def test_bad_requests_get_a_4xx_naming_the_field(client, body, status, field, words):
    r = client[0].post('/v1/samples', content=body if isinstance(body, bytes) else json.dumps(body))
    ans = r.json()
    assert (r.status_code, ans['error']['field']) == (status, field) and words in ans['error']['message'], ans


@pytest.mark.parametrize('query, field', [('label=three', 'label'), ('label=1&guidance=nan', 'guidance'), ('labels=1,x', 'labels'),
                                          ('label=1&n=9', 'n'), ('label=1&steps=51', 'steps'), ('label=1&colour=red', 'colour')])
def test_bad_query_strings(client, query, field):
    r = client[0].get('/v1/samples.png?' + query)
    assert r.status_code == 422 and r.json()['error']['field'] == field


def test_unconditional_model_refuses_labels_and_times_out_cleanly(uclient):
    card = uclient.get('/v1/model').json(); assert not card['conditional'] and card['classes'] == []
    r = uclient.post('/v1/samples', json={'label': 3})
    assert r.status_code == 422 and r.json()['error']['field'] == 'label' and 'unconditional' in r.json()['error']['message']
    r = uclient.post('/v1/samples', json={'n': 2})
    assert r.status_code == 503 and 'timeout of 0.001 s' in r.json()['error']['message']
    assert uclient.get('/healthz').status_code == 200                              # the service is still there


def test_not_found_and_wrong_method(client):
    assert client[0].get('/v2/nothing').status_code == 404
    assert client[0].get('/v1/samples').status_code == 405


def test_metrics_count_requests_images_and_batches(client):
    c = client[0]
    before = read_metrics(c.get('/metrics').text)
    for body in ({'label': 4, 'n': 3, 'seed': 1}, {'label': 5, 'seed': 2}, {'label': 11}): c.post('/v1/samples', json=body)
    after = read_metrics(c.get('/metrics').text)
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


@pytest.fixture(scope='module')
def served(tiny_run):
    "`ddpm_course serve --max-n 8` in its own process, started once for the two tests below (the second stops it with Ctrl-C)"
    s = Server(tiny_run, '--max-n', MAX_N)
    yield s
    s.stop()                                      # (already stopped where the second test ran: then this only reads its output)


@pytest.mark.precision
def test_the_served_process(served, tiny_run):
    """`ddpm_course serve` in its own process: its precision is `auto`'s (DDPM_CPU_BF16 reaches it), and its images are those of
    the Python API at that precision to within rounding"""
    from ddpm_course.machine import autocast_for
    s = served
    status, _, raw = http('GET', s.url + '/v1/model'); card = json.loads(raw)
    assert status == 200 and card['precision'] == resolve_precision('auto', 'cpu') and s.url.startswith('http://127.0.0.1:')
    got = _images(json.loads(http('POST', s.url + '/v1/samples', {'label': 3, 'n': 4, 'seed': 5})[2]))
    run = open_run(tiny_run); d = load_checkpoint(run.config, run.ckpt)
    with autocast_for('cpu', 'auto'): ref = to_uint8(to_unit(sample(guided(d), labels=[3] * 4, seed=5)))
    diff = (got.int() - ref.int()).abs()          # (the server runs 1 thread, this process more: rounding may move a pixel a level)
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.005, (diff.max(), (diff > 0).float().mean())


def test_the_served_process_batches_under_load_and_stops_on_ctrl_c(served, tiny_run):
    """The same process under 8 clients at once: requests that wait are sampled together (and one at a time with
    --max-batch 1); Ctrl-C stops it cleanly. Not marked precision: the batching and the stop are the same at either one"""
    s = served
    try: assert _load(s.url) > 1.5
    finally: code, out = s.stop()
    assert code == 0 and 'stopped' in out and 'Traceback' not in out, out      # Ctrl-C: a clean stop, not a traceback
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
    code = BLOCK_EXTRAS + "import ddpm_course.serve, ddpm_course.export, ddpm_course.cli\nsys.argv = ['ddpm_course', 'serve', '--run', sys.argv[1]]\nddpm_course.cli.main()"
    r = subprocess.run([sys.executable, '-c', code, str(tiny_run)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "pip install 'ddpm_course[serve]'" in r.stderr and 'Traceback' not in r.stderr, r.stderr
