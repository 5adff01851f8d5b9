import sys, time
from ddpm_course import cli


def run_shell(argv, monkeypatch, capsys=None) -> tuple[int, str]:
    "Run `ddpm_course ARGV` as the console script does (`main()` reading sys.argv), in this process: (exit code, what it printed)"
    monkeypatch.setattr(sys, 'argv', ['ddpm_course', *map(str, argv)])
    code, msg = 0, ''
    try: cli.main()
    except SystemExit as e:                                      # sys.exit('message') prints it and exits 1, as the interpreter would
        if isinstance(e.code, str): code, msg = 1, e.code + '\n'
        else: code = e.code or 0
    out = capsys.readouterr() if capsys is not None else None
    return code, (out.out + out.err if out else '') + msg


import shutil
from ddpm_course.deploy import ServeProcess
from pathlib import Path
import pytest

EXE = shutil.which('ddpm_course') or str(Path(sys.executable).parent/'ddpm_course')
TINY_TRAIN = ['--preset', 'tiny', '--epochs', '1', '--n', '200', '--T', '50', '--wandb', 'off', '--quiet']


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    "A tiny conditional run (one epoch, 200 digits, T = 50), trained by the command line: for the service's tests"
    out = tmp_path_factory.mktemp('serve')/'run'
    cli.main(['train', '--out', str(out), *TINY_TRAIN])
    return out


@pytest.fixture(scope='session')
def tiny_urun(tmp_path_factory):
    "The same, unconditional"
    out = tmp_path_factory.mktemp('serve')/'urun'
    cli.main(['train', '--out', str(out), *TINY_TRAIN, '--no-conditional'])
    return out


def Server(run, *flags, timeout: float = 180):
    "`ddpm_course serve` on a free loopback port in its own process, one torch thread (chapter 12's `ServeProcess`)"
    return ServeProcess(run, *flags, env={'OMP_NUM_THREADS': '1'}, timeout=timeout)
