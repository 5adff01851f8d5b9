"""Every failure a user can cause ends in one line that names the problem (exit code 1, 130 for Ctrl-C), never in a
traceback, and nothing earlier is lost: the last good checkpoint stays byte for byte what it was.

Most cases run the command line in this process exactly as the `ddpm_course` script does (`main()` reading
`sys.argv`); the ones about processes (Ctrl-C, kill -9, two writers) run it as a real subprocess. A read-only folder
and a full disk are real tmpfs mounts when this machine allows them (root, as in CI), else a patched write."""
import errno, hashlib, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from ddpm_course import cli
from ddpm_course.runs import RUN_FORMAT, RunLock, latest_checkpoint
from conftest import run_shell, shared_run, copy_of_run, TINY_TRAIN

TINY = ['--preset', 'tiny', '--n', '200', '--T', '50', '--bs', '32', '--wandb', 'off', '--quiet', '--sample-every', '100', '--n-samples', '4']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true', 'MPLBACKEND': 'Agg'}


def shell(argv, monkeypatch, capsys): return run_shell(argv, monkeypatch, capsys)


def _as_at_a_terminal():
    "SIGINT as an interactive shell leaves it to a program (a suite started in the background by a script inherits it ignored)"
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def proc(argv, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-m', 'ddpm_course.cli', *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=ENV, preexec_fn=_as_at_a_terminal, **kw)


def fingerprint(run: Path) -> dict:
    "sha256 of every file of every complete checkpoint, and of `latest` and `config.json`"
    files = [run/'latest', run/'config.json'] + sorted((run/'checkpoints').glob('epoch_*/*'))
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


@pytest.fixture(scope='module')
def good(tmp_path_factory):
    "A trained run (1 epoch of the tiny preset, conftest's shared one) that every case below must leave as it is"
    return copy_of_run(shared_run('test-tiny', TINY_TRAIN), tmp_path_factory, 'good')


def check(code, out, want_code, *msgs):
    assert code == want_code, f"exit code {code}, expected {want_code}:\n{out}"
    assert 'Traceback' not in out, out
    for m in msgs: assert m in out, f"{m!r} not in:\n{out}"
    if want_code: assert out.strip().splitlines()[-1].startswith('ddpm_course '), out    # one line that names the command


# ------------------------------------------------------------------ bad flags: refused before any work or any write
TRAIN_FLAGS = [
    (['--epochs', '0'], 'epochs (--epochs) must be a whole number of at least 1'),
    (['--epochs', '-3'], 'epochs (--epochs)'),
    (['--lr', '-1'], 'lr (--lr) must be a positive finite number'),
    (['--lr', 'nan'], 'lr (--lr)'),
    (['--wd', '-0.1'], 'wd (--wd) must be a finite number >= 0'),
    (['--min-snr-gamma', '-5'], 'min_snr_gamma (--min-snr-gamma)'),
    (['--bs', '0'], 'bs (--bs)'),
    (['--valid-pct', '0'], 'valid_pct (--valid-pct) must be a fraction in (0, 1)'),
    (['--valid-pct', '1.5'], 'valid_pct'),
    (['--p-uncond', '1'], 'p_uncond (--p-uncond)'),
    (['--ema-decay', '1'], 'ema_decay (--ema-decay)'),
    (['--T', '1'], 'T (--T) must be a whole number of at least 2'),
    (['--size', '2'], 'size (--size) must be a whole number of pixels, at least 4'),
    (['--steps', '0'], 'steps (--steps) must be a whole number of at least 1'),
    (['--epochs', '2', '--steps', '10'], '--epochs 2 or --steps 10, not both'),
    (['--n', '1'], 'n (--n)'),
    (['--channels', '2'], 'channels (--channels) must be 1 or 3'),
    (['--zero-terminal-snr', '--pred-type', 'eps'], 'use --pred-type v'),
    (['--sample-every', '-1'], 'sample_every (--sample-every)'),
    (['--dataset', 'mnistt'], "unknown dataset 'mnistt'"),
    (['--dataset', './no/such/folder'], 'does not exist'),
    (['--n', '4'], 'too few to hold out a validation image'),
]

@pytest.mark.parametrize('flags, msg', TRAIN_FLAGS, ids=[' '.join(f) for f, _ in TRAIN_FLAGS])
def test_train_refuses_bad_flags(flags, msg, tmp_path, monkeypatch, capsys):
    out_dir = tmp_path/'new'
    code, out = shell(['train', '--preset', 'tiny', '--wandb', 'off', '--out', out_dir, *flags], monkeypatch, capsys)
    check(code, out, 1, msg)
    assert not (out_dir/'config.json').exists() and not (out_dir/'checkpoints').exists()     # nothing written


SAMPLE_FLAGS = [
    (['--n', '0'], '--n must be at least 1'),
    (['--n', '-5'], '--n must be at least 1'),
    (['--per-class', '0'], '--per-class must be at least 1'),
    (['--steps', '-1'], '--steps must be'),
    (['--out', 'x.jpgg'], '--out must name a .png file'),
    (['--npz', 'x.txt'], '--npz must name a .npz file'),
    (['--label', '99'], '--label must be in [0, 10)'),
    (['--guidance', '-1', '--label', '3'], 'guidance must be a number >= 0'),
    (['--guidance', 'nan', '--label', '3'], 'guidance must be a number >= 0'),
    (['--guidance', '2'], '--guidance'),
    (['--eta', '2'], 'eta must be a number in [0, 1]'),
    (['--label', '1', '--per-class', '2'], 'give --label or --per-class, not both'),
]

@pytest.mark.parametrize('flags, msg', SAMPLE_FLAGS, ids=[' '.join(f) for f, _ in SAMPLE_FLAGS])
def test_sample_refuses_bad_flags(flags, msg, good, tmp_path, monkeypatch, capsys):
    before = fingerprint(good)
    monkeypatch.chdir(tmp_path)
    code, out = shell(['sample', '--run', good, '--out', tmp_path/'s.png', *flags], monkeypatch, capsys)
    check(code, out, 1, msg)
    assert not (tmp_path/'s.png').exists() and fingerprint(good) == before


@pytest.mark.parametrize('flags, msg', [(['--per-class', '0'], '--per-class must be at least 1'), (['--dataset', 'nope'], "unknown dataset 'nope'"),
                                        (['--size', '20'], 'multiples of 8')])
def test_grid_refuses_bad_flags(flags, msg, tmp_path, monkeypatch, capsys):
    code, out = shell(['grid', '--out', tmp_path/'g.png', *flags], monkeypatch, capsys)
    check(code, out, 1, msg); assert not (tmp_path/'g.png').exists()


@pytest.mark.parametrize('flags, msg', [(['--n-per-class', '1'], 'at least 2'), (['--steps', '0'], '--steps must be positive'),
                                        (['--clf-epochs', '0'], '--clf-epochs must be at least 1'), (['--guidance', '-2'], 'guidance must be')])
def test_evaluate_refuses_bad_flags(flags, msg, good, monkeypatch, capsys):
    before = fingerprint(good)
    code, out = shell(['evaluate', '--run', good, *flags], monkeypatch, capsys)
    check(code, out, 1, msg); assert fingerprint(good) == before and not (good/'eval').exists()


# ------------------------------------------------------------------ bad files
@pytest.fixture
def copy_of(good, tmp_path):
    def make():
        dst = tmp_path/'copy'; shutil.copytree(good, dst); return dst
    return make

def test_missing_run(tmp_path, monkeypatch, capsys):
    check(*shell(['sample', '--run', tmp_path/'nowhere', '--out', tmp_path/'s.png'], monkeypatch, capsys), 1, 'does not exist')

def test_folder_that_is_no_run(tmp_path, monkeypatch, capsys):
    check(*shell(['sample', '--run', tmp_path, '--out', tmp_path/'s.png'], monkeypatch, capsys), 1, 'is not a training run')

@pytest.mark.parametrize('text, msg', [('[1, 2]', 'is not a ddpm_course run config'), ('{"format": 3}', 'is not a ddpm_course run config'),
                                       ('not json', 'is corrupted'),
                                       (json.dumps({'format': RUN_FORMAT, 'model': 5, 'schedule': {}, 'pred_type': 'v'}), 'does not describe a ddpm_course model')])
def test_config_of_the_wrong_shape(text, msg, copy_of, tmp_path, monkeypatch, capsys):
    run = copy_of(); (run/'config.json').write_text(text)
    check(*shell(['sample', '--run', run, '--out', tmp_path/'s.png'], monkeypatch, capsys), 1, msg)

def test_config_with_unknown_settings_cannot_resume(copy_of, monkeypatch, capsys):
    run = copy_of(); c = json.loads((run/'config.json').read_text()); c['train']['learning_rate'] = 1
    (run/'config.json').write_text(json.dumps(c)); before = fingerprint(run)
    check(*shell(['train', '--resume', '--out', run], monkeypatch, capsys), 1, 'holds training settings this version cannot use')
    assert fingerprint(run) == before

def test_corrupted_weights(copy_of, tmp_path, monkeypatch, capsys):
    run = copy_of(); p = latest_checkpoint(run)/'ema.safetensors'; p.write_bytes(p.read_bytes()[:200])
    check(*shell(['sample', '--run', run, '--out', tmp_path/'s.png'], monkeypatch, capsys), 1, 'ema.safetensors is corrupted')

def test_nan_weights_are_refused(copy_of, tmp_path, monkeypatch, capsys):
    run = copy_of(); p = latest_checkpoint(run)/'ema.safetensors'
    sd = load_file(p); sd['outc.weight'][:] = float('nan'); save_file(sd, p)
    check(*shell(['sample', '--run', run, '--out', tmp_path/'s.png'], monkeypatch, capsys), 1, 'non-finite weights')
    assert not (tmp_path/'s.png').exists()

def test_latest_outside_the_run(copy_of, tmp_path, monkeypatch, capsys):
    run = copy_of(); (run/'latest').write_text('../../../etc\n')
    check(*shell(['sample', '--run', run, '--out', tmp_path/'s.png'], monkeypatch, capsys), 1, 'points outside the run')

def test_decompression_bomb(tmp_path, monkeypatch, capsys):
    for c in 'ab': (tmp_path/'d'/c).mkdir(parents=True); Image.new('L', (8, 8)).save(tmp_path/'d'/c/'ok.png')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 16)          # PIL refuses images over twice this many pixels: an 8x8 is a "bomb" now
    check(*shell(['grid', '--dataset', tmp_path/'d', '--size', '16', '--out', tmp_path/'g.png'], monkeypatch, capsys), 1, "decompression-bomb limit")

def test_corrupted_cached_judge_is_retrained_and_a_weak_one_refused(copy_of, monkeypatch, capsys):
    run = copy_of()
    (run/'eval').mkdir(); (run/'eval'/'classifier.json').write_text('{"vocab": ')          # a cache a crash cut short
    (run/'eval'/'classifier.safetensors').write_bytes(b'x')
    code, out = shell(['evaluate', '--run', run, '--n-per-class', '2', '--steps', '2', '--sampler', 'ddim', '--guidance', '3', '--clf-epochs', '1'],
                      monkeypatch, capsys)
    check(code, out, 1, 'cannot be read', 'the bar is 97% right', '--allow-weak-judge')   # retrained; on 200 digits and 1 epoch it is weak
    assert not (run/'eval'/'metrics.json').exists()


# ------------------------------------------------------------------ the disk and the folder
def test_out_through_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path/'file').write_text('x')
    check(*shell(['train', *TINY, '--epochs', '1', '--out', tmp_path/'file'/'run'], monkeypatch, capsys), 1, 'not a folder')
    check(*shell(['sample', '--run', tmp_path, '--out', tmp_path/'file'/'s.png'], monkeypatch, capsys), 1, 'is a file')


@pytest.fixture
def mount(tmp_path):
    "A small tmpfs at a folder, or None where this machine cannot mount"
    made = []
    def make(opts):
        d = tmp_path/f'mnt{len(made)}'; d.mkdir()
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', opts, 'tmpfs', str(d)], capture_output=True)
        if r.returncode: return None
        made.append(d); return d
    yield make
    for d in made: subprocess.run(['umount', '-l', str(d)], capture_output=True)


def test_read_only_folder(mount, good, tmp_path, monkeypatch, capsys):
    ro = mount('ro,size=64k')
    if ro is None: pytest.skip("this machine cannot mount a read-only tmpfs (needs root); as root, root ignores a folder's permissions")
    check(*shell(['train', *TINY, '--epochs', '1', '--out', ro/'run'], monkeypatch, capsys), 1, 'read-only')
    before = fingerprint(good)
    check(*shell(['sample', '--run', good, '--out', ro/'s.png'], monkeypatch, capsys), 1, 'cannot write into')
    assert fingerprint(good) == before


def test_full_disk_keeps_the_last_checkpoint(mount, tmp_path, monkeypatch, capsys):
    "A disk that fills up while the second checkpoint is written: one line, and the first checkpoint is intact"
    disk = mount('size=3m')                                      # room for one tiny checkpoint (about 1.2 MB), not two
    run = (disk or tmp_path)/'run'
    if disk is None:
        import ddpm_course.runs as runs
        real, calls = runs.save_file, []
        def fill(sd, path, *a, **k):
            calls.append(path)
            if len(calls) > 4: raise OSError(errno.ENOSPC, 'No space left on device', str(path))
            return real(sd, path, *a, **k)
        monkeypatch.setattr(runs, 'save_file', fill)
    code, out = shell(['train', *TINY, '--epochs', '3', '--out', run], monkeypatch, capsys)
    check(code, out, 1, 'No space left on device', 'the disk is full')
    first = latest_checkpoint(run)
    assert first.name == 'epoch_0001' and all(torch.isfinite(v).all() for v in load_file(first/'ema.safetensors').values())


# ------------------------------------------------------------------ resume, dead ends, half-written checkpoints
@pytest.mark.parametrize('flags, msg', [(['--lr', '0.5'], '--lr 0.5 (the run has --lr 0.001)'), (['--preset', 'mini'], '--preset mini (the run has --preset tiny)'),
                                        (['--dataset', 'shapes'], '--dataset shapes (the run has --dataset digits)'), (['--no-conditional'], '--no-conditional')])
def test_resume_refuses_contradicting_flags(flags, msg, copy_of, monkeypatch, capsys):
    run = copy_of(); before = fingerprint(run)
    check(*shell(['train', '--resume', '--out', run, *flags], monkeypatch, capsys), 1, msg)
    assert fingerprint(run) == before

def test_resume_without_epochs_keeps_the_runs_plan(copy_of, monkeypatch, capsys):
    run = copy_of()
    code, out = shell(['train', '--resume', '--out', run], monkeypatch, capsys)
    check(code, out, 0, 'has already trained 1 of 1 epochs')     # not the default 25
    assert latest_checkpoint(run).name == 'epoch_0001'

def test_a_run_that_died_before_its_first_checkpoint_starts_again(copy_of, monkeypatch, capsys):
    for argv in (['train', *TINY, '--epochs', '1'], ['train', '--resume']):
        run = copy_of(); shutil.rmtree(run/'checkpoints'); (run/'latest').unlink()
        (run/'checkpoints'/'.tmp_epoch_0001_4242').mkdir(parents=True)              # what a kill left half-written
        code, out = shell([*argv, '--out', run], monkeypatch, capsys)
        check(code, out, 0, 'stopped before its first checkpoint')
        assert latest_checkpoint(run).name == 'epoch_0001' and not list((run/'checkpoints').glob('.tmp_*'))
        shutil.rmtree(run)

def test_relative_dataset_resolves_from_anywhere(tmp_path, monkeypatch, capsys):
    from ddpm_course.data import load_images
    x, y, _ = load_images('digits')
    for i in range(60):
        d = tmp_path/'work'/'mydigits'/str(int(y[i])); d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i, 0].numpy()).save(d/f'{i}.png')
    monkeypatch.chdir(tmp_path/'work')
    check(*shell(['train', '--preset', 'tiny', '--T', '50', '--wandb', 'off', '--quiet', '--epochs', '1', '--dataset', 'mydigits',
                  '--out', tmp_path/'run'], monkeypatch, capsys), 0)
    monkeypatch.chdir(tmp_path)                                  # elsewhere: the run still finds its data
    check(*shell(['train', '--resume', '--epochs', '2', '--out', tmp_path/'run'], monkeypatch, capsys), 0)
    assert latest_checkpoint(tmp_path/'run').name == 'epoch_0002'
    assert json.loads((tmp_path/'run'/'config.json').read_text())['train']['dataset'] == str(tmp_path/'work'/'mydigits')


# ------------------------------------------------------------------ processes: two writers, Ctrl-C, kill -9
def test_two_writers(copy_of, tmp_path):
    run = copy_of(); before = fingerprint(run)
    with RunLock(run):                                           # this process writes the run
        p = proc(['train', '--resume', '--epochs', '3', '--out', run]); out, _ = p.communicate(timeout=120)
    check(p.returncode, out, 1, f'is being written by another process (pid {os.getpid()})')
    assert fingerprint(run) == before
    q = proc(['train', *TINY, '--epochs', '1', '--out', tmp_path/'fresh'])            # a second fresh writer on one folder
    with RunLock(tmp_path/'fresh'): out, _ = q.communicate(timeout=120)
    check(q.returncode, out, 1, 'one run folder has one writer'); assert not (tmp_path/'fresh'/'config.json').exists()


def wait_for(path: Path, p: subprocess.Popen, timeout=180, poll=0.2):
    t0 = time.time()
    while not path.exists():
        assert p.poll() is None, p.stdout.read()
        assert time.time() - t0 < timeout; time.sleep(poll)


def test_ctrl_c_then_resume(tmp_path, monkeypatch, capsys):
    run = tmp_path/'run'
    p = proc(['train', *TINY, '--epochs', '200', '--out', run])        # more than it can train before the signal comes
    wait_for(run/'latest', p)                                          # (epoch_0001 itself is rotated away after epoch 3)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT); out, _ = p.communicate(timeout=120)
    check(p.returncode, out, 130, f'interrupted; `ddpm_course train --resume --out {run}` continues')
    done = latest_checkpoint(run)
    check(*shell(['train', '--resume', '--epochs', str(int(done.name[-4:]) + 1), '--out', run], monkeypatch, capsys), 0, 'resuming')   # (in this process)
    assert int(latest_checkpoint(run).name[-4:]) == int(done.name[-4:]) + 1


def test_kill_9_then_resume_gives_the_uninterrupted_weights(tmp_path, monkeypatch, capsys):
    "A run killed (SIGKILL: no handler, no cleanup) as soon as its first checkpoint is there, then resumed, ends with the weights of the run left alone"
    straight, killed, flags = tmp_path/'straight', tmp_path/'killed', [*TINY, '--n', '1000', '--epochs', '3']   # epochs of 28 steps, not 5
    k = proc(['train', *flags, '--out', killed])                                   # the process that dies: a real one
    wait_for(killed/'checkpoints'/'epoch_0001'/'state.json', k, poll=0.02)
    k.kill(); k.communicate(timeout=60)
    assert k.returncode == -signal.SIGKILL and not (killed/'checkpoints'/'epoch_0003').exists(), "the run ended before the signal came"
    check(*shell(['train', *flags, '--out', straight], monkeypatch, capsys), 0)    # the same run, uninterrupted,
    check(*shell(['train', '--resume', '--out', killed], monkeypatch, capsys), 0, 'resuming')   # and the resume (both in this process)
    a, b = (load_file(latest_checkpoint(x)/'model.safetensors') for x in (straight, killed))
    assert latest_checkpoint(killed).name == 'epoch_0003' and all(torch.equal(a[n], b[n]) for n in a)
    assert not list((killed/'checkpoints').glob('.tmp_*'))


def test_resume_may_change_the_logging(copy_of, monkeypatch, capsys):
    "Settings that change no weight (W&B, the sample grids) may change on --resume; the run's config.json keeps what it was trained with"
    run = copy_of(); saved = (run/'config.json').read_text()
    check(*shell(['train', '--resume', '--out', run, '--epochs', '2', '--wandb', 'offline', '--sample-every', '1'], monkeypatch, capsys), 0)
    assert latest_checkpoint(run).name == 'epoch_0002' and (run/'samples'/'epoch_0002.png').exists() and (run/'wandb').exists()
    assert (run/'config.json').read_text() == saved
