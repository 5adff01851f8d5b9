"""Tools to run and measure the service from the outside, for the tests and bench/serve.py (not part of the package):
`ddpm_course serve` in a process of its own (`ServeProcess`), uvicorn in a thread (`ThreadServer`), one HTTP request with the
standard library (`http`), a bounded load test (`load_test`), and the service's Prometheus text read back (`read_metrics`)."""
import json, os, re, shutil, signal, subprocess, sys, threading, time
import urllib.request, urllib.error
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
from ddpm_course.serve import bind_socket, url_of


def serve_command() -> list[str]:
    "How to run this package's `ddpm_course` command from here: the installed script beside this Python, or the module"
    exe = shutil.which('ddpm_course') or str(Path(sys.executable).parent/'ddpm_course')
    return [exe] if Path(exe).exists() else [sys.executable, '-m', 'ddpm_course.cli']


class ServeProcess:
    "`ddpm_course serve --port 0 ...` in a process of its own, on a free loopback port: `.url`, `.stop()` (Ctrl-C)"
    def __init__(self, run_dir, *flags, env: dict | None = None, timeout: float = 180.):
        self.stopped = None                                    # (exit code, output) once stopped
        self.p = subprocess.Popen([*serve_command(), 'serve', '--run', str(run_dir), '--port', '0', *map(str, flags)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})})
        self.lines, t0 = [], time.time()
        while time.time() - t0 < timeout:
            line = self.p.stdout.readline()
            if not line and self.p.poll() is not None: raise RuntimeError(f"the server exited ({self.p.returncode}):\n{''.join(self.lines)}")
            self.lines.append(line)
            m = re.search(r' at (http://[^ ]+?)/ ', line)
            if m: self.url = m.group(1); return
        self.p.kill(); raise RuntimeError(f"the server did not start within {timeout:g} s:\n{''.join(self.lines)}")

    def stop(self) -> tuple[int, str]:
        "Ctrl-C, then (exit code, everything it printed); again, the same answer"
        if self.stopped is not None: return self.stopped
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try: out, _ = self.p.communicate(timeout=60)
            except subprocess.TimeoutExpired: self.p.kill(); out, _ = self.p.communicate()
        else: out, _ = self.p.communicate()
        self.stopped = (self.p.returncode, ''.join(self.lines) + (out or ''))
        return self.stopped


class ThreadServer:
    "uvicorn serving `app` in a background thread on a free loopback port: `with ThreadServer(app) as url: ...`"
    def __init__(self, app, host: str = '127.0.0.1', port: int = 0):
        import uvicorn
        self.sock = bind_socket(host, port); self.url = url_of(self.sock)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level='warning', access_log=False))

    def __enter__(self) -> str:
        self.thread = threading.Thread(target=self.server.run, kwargs=dict(sockets=[self.sock]), daemon=True); self.thread.start()
        for _ in range(500):
            if self.server.started: return self.url
            time.sleep(0.01)
        raise RuntimeError("the server did not start within 5 s")

    def __exit__(self, *exc):
        self.server.should_exit = True; self.thread.join(10); self.sock.close()


def http(method: str, url: str, body=None, timeout: float = 120.) -> tuple[int, dict, bytes]:
    "(status, headers, body bytes) of one HTTP request with the standard library; `body` a dict or list is sent as JSON, bytes as they are"
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    req = urllib.request.Request(url, data=data, method=method, headers={'Content-Type': 'application/json'} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r: return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e: return e.code, dict(e.headers), e.read()


def read_metrics(text: str) -> dict:
    "Prometheus text as {'name{labels}': value}"
    out = {}
    for line in text.splitlines():
        if line and not line.startswith('#'):
            k, v = line.rsplit(' ', 1); out[k] = float(v)
    return out


def load_test(url: str, body, requests: int = 32, concurrency: int = 4, timeout: float = 120.) -> dict:
    "A bounded load test on `url` (…/v1/samples) from `concurrency` client threads: throughput, latency percentiles, statuses, and the service's sampler calls meanwhile"
    make = body if callable(body) else (lambda i: body)
    metrics_url = url.split('/v1/')[0] + '/metrics'
    def batches() -> tuple[float, float]:
        m = read_metrics(http('GET', metrics_url, timeout=timeout)[2].decode())
        return m.get('ddpm_batch_images_count', 0.), m.get('ddpm_batch_images_sum', 0.)
    def one(i):
        t0 = time.perf_counter(); status, _, raw = http('POST', url, make(i), timeout)
        return status, time.perf_counter() - t0, (json.loads(raw).get('n', 0) if status == 200 else 0)
    (c0, s0), t0 = batches(), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex: res = list(ex.map(one, range(requests)))
    secs = time.perf_counter() - t0; lat = np.array([r[1] for r in res]); c1, s1 = batches()
    return dict(requests=requests, concurrency=concurrency, seconds=secs, requests_per_s=requests / secs,
                images_per_s=sum(r[2] for r in res) / secs, p50_ms=1000 * float(np.percentile(lat, 50)),
                p95_ms=1000 * float(np.percentile(lat, 95)), statuses=dict(Counter(r[0] for r in res)),
                sampler_calls=c1 - c0, mean_batch=(s1 - s0) / (c1 - c0) if c1 > c0 else 0.)
