"The `ddpm_course` command: the installed entry point works, every flag is in --help, and bad input exits with a message, not a traceback."
import subprocess, sys, shutil
from pathlib import Path
import pytest
from PIL import Image
from ddpm_course.cli import main, make_parser

EXE = shutil.which('ddpm_course') or str(Path(sys.executable).parent/'ddpm_course')


def test_installed_entry_point():
    "One real process: the console script is installed and runs"
    r = subprocess.run([EXE, 'train', '--help'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert '--resume' in r.stdout and '--preset' in r.stdout


def _help(cmd):
    sub = next(a for a in make_parser()._actions if a.dest == 'command')
    return sub.choices[cmd].format_help()


@pytest.mark.parametrize('cmd, flags', [
    ('train', ['--dataset', '--size', '--preset', '--epochs', '--bs', '--lr', '--wandb', '--out', '--resume', '--conditional', '--precision', '--compile']),
    ('sample', ['--run', '--n', '--out', '--npz', '--steps', '--seed', '--label', '--per-class', '--guidance', '--sampler', '--eta']),
    ('grid', ['--dataset', '--size', '--per-class', '--out']),
    ('evaluate', ['--run', '--out', '--n-per-class', '--steps', '--sampler', '--guidance', '--guidance-scale', '--seed', '--clf-epochs']),
])
def test_help_lists_every_flag(cmd, flags):
    h = _help(cmd)
    for f in flags: assert f in h, f"{f} missing from `ddpm_course {cmd} --help`"


def _shell(monkeypatch, *args):
    "Run `ddpm_course ARGS` as the shell would (sys.argv, exit status), in this process"
    monkeypatch.setattr(sys, 'argv', ['ddpm_course', *map(str, args)])
    try: main(); return 0, ''
    except SystemExit as e: return (e.code if isinstance(e.code, int) else 1), str(e.code)


def test_bad_input_exits_with_a_message(tmp_path, monkeypatch):
    code, msg = _shell(monkeypatch, 'sample', '--run', tmp_path/'missing', '--out', tmp_path/'x.png')
    assert code == 1 and 'does not exist' in msg
    code, msg = _shell(monkeypatch, 'train', '--epochs', '0', '--out', tmp_path/'r')
    assert code == 1 and 'epochs must be at least 1' in msg
    assert not (tmp_path/'r'/'config.json').exists()
    code, msg = _shell(monkeypatch, 'evaluate', '--run', tmp_path/'missing')
    assert code == 1 and 'does not exist' in msg
    code, msg = _shell(monkeypatch, 'grid', '--dataset', 'nosuchset', '--out', tmp_path/'g.png')
    assert code == 1 and "unknown dataset 'nosuchset'" in msg


def test_grid_writes_a_png(tmp_path, monkeypatch):
    code, _ = _shell(monkeypatch, 'grid', '--dataset', 'shapes', '--size', '16', '--per-class', '3', '--out', tmp_path/'s.png')
    assert code == 0
    assert Image.open(tmp_path/'s.png').size == (2 + 3 * 18, 2 + 4 * 18)
