"""The service's page in a real headless browser: Playwright driving Debian's `chromium` package (Playwright's own
browser download cannot work without internet). It picks a class, clicks the button, and checks that the grid appears,
at the right size, and that it is the grid the API gives for the same request.

Needs `apt-get install -y chromium` (.ci/run does it). Without it the test is skipped, unless DDPM_BROWSER_TEST=required
(as in CI), when it fails."""
import base64, io, os, shutil
import numpy as np
import pytest
from PIL import Image
from conftest import Server
from harness import http
from ddpm_course.core import grid_cols

CHROMIUM = shutil.which('chromium') or ('/usr/bin/chromium' if os.path.exists('/usr/bin/chromium') else None)
# flags for a machine with no network and no screen, as root: no sandbox, no GPU, nothing that phones home
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']


def _chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get('DDPM_BROWSER_TEST') == 'required': pytest.fail("Debian's chromium is not installed: apt-get install -y chromium")
        pytest.skip("needs Debian's chromium: apt-get install -y chromium")
    return CHROMIUM


def test_the_page_draws_the_asked_digits(tiny_run, tmp_path):
    exe = _chromium()
    from playwright.sync_api import sync_playwright
    s = Server(tiny_run)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, args=FLAGS)
            page = browser.new_page(viewport={'width': 900, 'height': 700})
            page.goto(s.url + '/')
            page.wait_for_selector('#go:not([disabled])', timeout=30_000)
            assert page.locator('#label option').count() == 10
            page.select_option('#label', '7')
            page.fill('#n', '4'); page.fill('#seed', '11'); page.fill('#steps', '20')
            with page.expect_response(lambda r: '/v1/samples.png' in r.url, timeout=60_000) as resp: page.click('#go')
            page.wait_for_function("document.getElementById('grid').naturalWidth > 0", timeout=60_000)
            w, h = page.evaluate("[document.getElementById('grid').naturalWidth, document.getElementById('grid').naturalHeight]")
            query = resp.value.url.split('?', 1)[1]
            shown = page.evaluate("""() => { const img = document.getElementById('grid'), c = document.createElement('canvas');
                c.width = img.naturalWidth; c.height = img.naturalHeight; c.getContext('2d').drawImage(img, 0, 0);
                return c.toDataURL('image/png').split(',')[1]; }""")     # the pixels the page shows
            status_line = page.inner_text('#status')
            page.screenshot(path=str(tmp_path/'page.png'))
            browser.close()
        cols = grid_cols(4)
        assert (w, h) == (2 + cols * 66, 2 + (4 // cols) * 66)                 # 4 digits of 16 px, enlarged 4x, 2 px apart
        assert 'label=7' in query and 'seed=11' in query and 'steps=20' in query and 'seed 11' in status_line
        status, _, direct = http('GET', s.url + '/v1/samples.png?' + query)
        shown = np.array(Image.open(io.BytesIO(base64.b64decode(shown))).convert('L'))
        assert status == 200 and np.array_equal(shown, np.array(Image.open(io.BytesIO(direct)).convert('L')))   # the page shows the API's grid
    finally: s.stop()
