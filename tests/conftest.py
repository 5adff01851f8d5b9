"""Shared fixtures and helpers. Nothing heavy at import: pytest-xdist's controller process imports this file too, and runs no
test, so torch and the package load in the workers, where the tests need them."""
import importlib.util, json, os, shutil, sys
from pathlib import Path
import pytest

PKG_DIR = Path(importlib.util.find_spec('ddpm_course').submodule_search_locations[0])     # (found without importing the package)
PACKAGE = tuple(f'ddpm_course.{p.stem}' for p in sorted(PKG_DIR.glob('*.py')) if not p.stem.startswith('_'))
ROOT = Path(__file__).resolve().parents[1]
EXE = shutil.which('ddpm_course') or str(Path(sys.executable).parent/'ddpm_course')
TINY_TRAIN = ['--preset', 'tiny', '--epochs', '1', '--n', '200', '--T', '50', '--wandb', 'off', '--quiet']


def pytest_configure(config):
    config.addinivalue_line('markers', "precision: its result depends on the network's precision; `make test` runs these a second time under "
                                       "the other setting of DDPM_CPU_BF16")


def _part(nodeid: str) -> str:
    "What bench/test_times.json times: a notebook (a case of tests/test_notebooks.py) or a test file"
    f, _, name = nodeid.partition('::')
    return f"nbs/{name.split('[', 1)[1].split(']', 1)[0]}.ipynb" if f.endswith('test_notebooks.py') else f


def pytest_collection_modifyitems(items):
    "The queue of `make test`: the longest parts first (bench/test_times.json: seconds by notebook and by test file), each file's tests together"
    try: secs = json.loads((ROOT/'bench'/'test_times.json').read_text())
    except (OSError, ValueError): return
    order = {id(it): (-secs.get(_part(it.nodeid), 10.), k) for k, it in enumerate(items)}
    items.sort(key=lambda it: order[id(it)])


def pytest_xdist_make_scheduler(config, log):
    """With `--dist loadscope --no-loadscope-reorder` (make test): a unit of work is a test file or a notebook, and a free
    worker takes the next unit of the queue above. The long parts start early, the run ends on short ones, and a file's tests
    run on one worker, so the two never wait on each other for a file's shared fixture. (pytest-xdist's own loadscope would
    make all the notebooks one unit: they are the cases of one test file.)"""
    if config.getoption('dist') != 'loadscope': return None
    from xdist.scheduler import LoadScopeScheduling
    class PartScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str: return _part(nodeid)
    return PartScheduling(config, log)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    "A test or notebook that sets PyTorch's threads (the command line does) leaves the next one in this worker as it found it"
    import torch
    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n: torch.set_num_threads(n)


def run_shell(argv, monkeypatch, capsys=None) -> tuple[int, str]:
    "Run `ddpm_course ARGV` as the console script does (`main()` reading sys.argv), in this process: (exit code, what it printed)"
    from ddpm_course import cli
    monkeypatch.setattr(sys, 'argv', ['ddpm_course', *map(str, argv)])
    code, msg = 0, ''
    try: cli.main()
    except SystemExit as e:                                      # sys.exit('message') prints it and exits 1, as the interpreter would
        if isinstance(e.code, str): code, msg = 1, e.code + '\n'
        else: code = e.code or 0
    out = capsys.readouterr() if capsys is not None else None
    return code, (out.out + out.err if out else '') + msg


def shared_run(name: str, argv: list[str]) -> Path:
    "A run trained by `ddpm_course train ARGV` once for every test and worker (chapter 01's cache, keyed by ARGV and the package's code)"
    from ddpm_course import cli
    from ddpm_course.data import cached, source_key
    def make(folder: Path): cli.main(['train', '--out', str(folder/'run'), *argv])
    return cached(name, make, argv, source_key(*PACKAGE))/'run'


def copy_of_run(src: Path, tmp_path_factory, name: str) -> Path:
    "A copy of a shared run that a test may write into (an export, a resumed epoch) without touching the shared one"
    dst = tmp_path_factory.mktemp(name)/'run'
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    "A tiny conditional run (one epoch, 200 digits, T = 50), trained once by the command line; this worker's copy of it"
    return copy_of_run(shared_run('test-tiny', TINY_TRAIN), tmp_path_factory, 'tiny')


@pytest.fixture(scope='session')
def tiny_urun(tmp_path_factory):
    "The same, unconditional"
    return copy_of_run(shared_run('test-tiny-uncond', TINY_TRAIN + ['--no-conditional']), tmp_path_factory, 'tiny_u')


def Server(run, *flags, timeout: float = 180):
    "`ddpm_course serve` on a free loopback port in its own process, one torch thread (tests/harness.py's `ServeProcess`)"
    from harness import ServeProcess
    return ServeProcess(run, *flags, env={'OMP_NUM_THREADS': '1'}, timeout=timeout)
