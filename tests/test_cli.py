"The `ddpm_course` command: the installed entry point works, every flag is in --help, and bad input exits with a message, not a traceback."
import subprocess, sys, shutil
from dataclasses import fields
from pathlib import Path
import numpy as np
import pytest
from conftest import run_shell, TINY_TRAIN as TINY
import torch
from PIL import Image
import ddpm_course.cli as cli
from ddpm_course.cli import main, make_parser, given
from ddpm_course.settings import TrainConfig, CLI_DEFAULTS, flag_of
from ddpm_course.core import to_unit, to_uint8, LABEL_PX
from ddpm_course.runs import load_run
from ddpm_course.sampling import sample
from ddpm_course.guidance import guided
from ddpm_course.machine import autocast_for

EXE = shutil.which('ddpm_course') or str(Path(sys.executable).parent/'ddpm_course')


def _run(*args, timeout=300):
    "`ddpm_course ARGS` in a real process"
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_installed_entry_point():
    "One real process: the console script is installed, runs, and its train --help has a flag for every TrainConfig field"
    r = _run('train', '--help')
    assert r.returncode == 0, r.stderr
    assert '--resume' in r.stdout and '--preset' in r.stdout
    for f in fields(TrainConfig):
        for flag in flags_of(f): assert f"{flag} " in r.stdout or f"{flag}," in r.stdout, flag


def flags_of(f) -> tuple[str, ...]: return f.metadata.get('flags') or (flag_of(f.name),)


def train_config(args) -> TrainConfig: return TrainConfig(**{**CLI_DEFAULTS, **given(args, TrainConfig)})


def _sub(cmd):
    return next(a for a in make_parser()._actions if a.dest == 'command').choices[cmd]


@pytest.mark.parametrize('cmd, flags', [
    ('train', ['--dataset', '--size', '--preset', '--epochs', '--bs', '--batch-size', '--lr', '--wandb', '--out', '--resume', '--conditional',
               '--no-conditional', '--precision', '--compile', '--valid-pct', '--zero-terminal-snr', '--n-samples', '--channels-last', '--T',
               '--threads']),
    ('sample', ['--run', '--n', '--out', '--npz', '--steps', '--seed', '--label', '--per-class', '--guidance', '--sampler', '--eta',
                '--spacing', '--precision', '--compile', '--threads']),
    ('inpaint', ['--run', '--image', '--mask', '--n', '--label', '--guidance', '--seed', '--out', '--npz', '--steps', '--jump', '--resample',
                 '--raw', '--device', '--threads']),
    ('edit', ['--run', '--image', '--strength', '--n', '--label', '--guidance', '--seed', '--out', '--npz', '--sampler', '--steps',
              '--spacing', '--raw', '--device', '--threads']),
    ('grid', ['--dataset', '--size', '--per-class', '--out']),
    ('evaluate', ['--run', '--out', '--n-per-class', '--steps', '--sampler', '--guidance', '--guidance-scale', '--seed', '--clf-epochs']),
    ('serve', ['--run', '--host', '--port', '--backend', '--onnx-dir', '--max-n', '--timeout', '--max-batch', '--batch-wait-ms', '--device', '--threads']),
    ('export', ['--run', '--format', '--out', '--raw']),
])
def test_help_lists_every_flag(cmd, flags):
    h = _sub(cmd).format_help()
    for f in flags: assert f in h, f"{f} missing from `ddpm_course {cmd} --help`"


@pytest.mark.parametrize('argv, mode', [([], None), (['--compile'], 'default'), (['--compile', 'reduce-overhead'], 'reduce-overhead'),
                                         (['--compile', 'max-autotune'], 'max-autotune')])
def test_compile_modes(argv, mode):
    for cmd, extra in [('train', []), ('sample', ['--run', 'r'])]:
        args = make_parser().parse_args([cmd, *extra, *argv])
        assert getattr(args, 'compile', None) == mode
    assert train_config(make_parser().parse_args(['train', *argv])).compile == mode


def test_compile_mode_refused(capsys):
    with pytest.raises(SystemExit): make_parser().parse_args(['train', '--compile', 'fast'])
    assert "invalid choice: 'fast'" in capsys.readouterr().err


def test_threads_flag(monkeypatch, capsys):
    import torch
    n0 = torch.get_num_threads()
    try:
        code, msg = run_shell(['sample', '--run', 'no/such/run', '--threads', '1'], monkeypatch, capsys)
        assert torch.get_num_threads() == 1 and code == 1
        code, msg = run_shell(['sample', '--run', 'no/such/run', '--threads', '0'], monkeypatch, capsys)
        assert code == 1 and 'threads must be a whole number of at least 1' in msg, msg
    finally: torch.set_num_threads(n0)


def test_train_has_a_flag_for_every_config_field():
    "Each TrainConfig field: its flags, its declared help, absent from the parsed flags unless given, defined once"
    import argparse
    acts = [a for a in _sub('train')._actions]
    for f in fields(TrainConfig):
        mine = [a for a in acts if a.dest == f.name]
        assert len(mine) == 1, f.name
        a = mine[0]
        assert set(flags_of(f)) <= set(a.option_strings) and a.default is argparse.SUPPRESS and a.help.startswith(f.metadata['help']), f.name
    opts = [o for a in acts for o in a.option_strings]
    assert len(opts) == len(set(opts))


def _shell(monkeypatch, *args): return run_shell(args, monkeypatch)


def test_bad_input_exits_with_a_message(tmp_path, monkeypatch):
    code, msg = _shell(monkeypatch, 'sample', '--run', tmp_path/'missing', '--out', tmp_path/'x.png')
    assert code == 1 and 'does not exist' in msg
    code, msg = _shell(monkeypatch, 'train', '--epochs', '0', '--out', tmp_path/'r')
    assert code == 1 and 'epochs (--epochs) must be a whole number of at least 1' in msg
    assert not (tmp_path/'r'/'config.json').exists()
    code, msg = _shell(monkeypatch, 'evaluate', '--run', tmp_path/'missing')
    assert code == 1 and 'does not exist' in msg
    code, msg = _shell(monkeypatch, 'grid', '--dataset', 'nosuchset', '--out', tmp_path/'g.png')
    assert code == 1 and "unknown dataset 'nosuchset'" in msg


def test_grid_writes_a_png(tmp_path, monkeypatch):
    code, _ = _shell(monkeypatch, 'grid', '--dataset', 'shapes', '--size', '16', '--per-class', '3', '--out', tmp_path/'s.png')
    assert code == 0
    assert Image.open(tmp_path/'s.png').size == (2 + 3 * 66, 2 + 4 * (66 + LABEL_PX))     # 16 px shapes enlarged 4x, each labelled


@pytest.fixture(scope='module')
def run(tiny_run):
    "A tiny conditional run (one epoch, 200 digits, T = 50), trained by the command line (conftest's, shared by the tests)"
    return tiny_run


@pytest.mark.parametrize('flags, named', [
    (['--lr', '0.01'], '--lr 0.01 (the run has --lr 0.001)'),
    (['--preset', 'small'], '--preset small (the run has --preset tiny)'),
    (['--dataset', 'shapes'], '--dataset shapes (the run has --dataset digits)'),
    (['--no-conditional'], '--no-conditional (the run has --conditional)'),
])
def test_resume_refuses_other_settings(run, monkeypatch, flags, named):
    before = sorted(p.name for p in (run/'checkpoints').iterdir())
    code, msg = _shell(monkeypatch, 'train', '--resume', '--out', run, '--epochs', '2', *flags)
    assert code == 1 and named in msg and 'only --epochs, --compile and the logging flags' in msg, msg
    assert sorted(p.name for p in (run/'checkpoints').iterdir()) == before


def test_resume_refusal_is_a_message_not_a_traceback(run):
    r = _run('train', '--resume', '--out', run, '--lr', '0.01', '--preset', 'small')
    assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert '--lr 0.01 (the run has --lr 0.001)' in r.stderr and '--preset small (the run has --preset tiny)' in r.stderr


def test_resume_accepts_the_saved_settings(run, monkeypatch, capsys):
    code, msg = _shell(monkeypatch, 'train', '--resume', '--out', run, *TINY)     # the very flags it was trained with
    assert code == 0, msg
    assert 'has already trained 1 of 1 epochs' in capsys.readouterr().out


@pytest.mark.parametrize('flags, msg', [
    (['--out', 'x.jpgg'], '--out must name a .png file'),
    (['--npz', 'x.png'], '--npz must name a .npz file'),
    (['--n', '0'], '--n must be at least 1'),
    (['--per-class', '0'], '--per-class must be at least 1'),
    (['--steps', '-1'], '--steps must be at least 1'),
    (['--label', '1', '--per-class', '2'], 'not both'),
])
def test_sample_is_refused_before_any_work(run, tmp_path, monkeypatch, flags, msg):
    "Bad flags of `sample` are refused before the run is loaded or anything sampled"
    def boom(*a, **k): raise AssertionError("loaded or sampled before the flags were checked")
    monkeypatch.setattr('ddpm_course.runs.load_run', boom); monkeypatch.setattr('ddpm_course.sampling.sample', boom)
    monkeypatch.chdir(tmp_path)
    code, err = _shell(monkeypatch, 'sample', '--run', run, *flags)
    assert code == 1 and msg in err, err
    assert not list(tmp_path.iterdir())


def test_sample_out_folder_that_cannot_be_made(run, tmp_path, monkeypatch):
    (tmp_path/'file').write_text('not a folder')
    code, err = _shell(monkeypatch, 'sample', '--run', run, '--out', tmp_path/'file'/'x.png')
    assert code == 1 and 'cannot create its folder' in err, err


def test_guidance_needs_labels(run, tmp_path, monkeypatch):
    code, err = _shell(monkeypatch, 'sample', '--run', run, '--guidance', '2', '--out', tmp_path/'x.png')
    assert code == 1 and '--guidance needs labels' in err, err


@pytest.mark.precision
def test_sample_equals_the_python_api(run, tmp_path):
    "The command line and `sample` from Python give the same images for the same seed, at the same precision (the command's default, auto)"
    x = main(['sample', '--run', str(run), '--label', '3', '--n', '4', '--seed', '7', '--out', str(tmp_path/'g.png'), '--npz', str(tmp_path/'g.npz')])
    z = np.load(tmp_path/'g.npz')
    d, cfg = load_run(run)
    with autocast_for(d.device, 'auto'): ref = to_uint8(to_unit(sample(guided(d), labels=[3] * 4, seed=7)))
    assert torch.equal(x, ref) and torch.equal(torch.from_numpy(z['images']).permute(0, 3, 1, 2), ref)
    assert z['labels'].tolist() == [3] * 4
    assert Image.open(tmp_path/'g.png').size == (2 + 2 * 66, 2 + 2 * (66 + LABEL_PX))   # each sample labelled with its class


def test_sample_goes_through_runs_sampling_diffusion_only(run, tmp_path):
    "A sampling request runs cli -> runs.load_run -> sampling.sample (guided) -> diffusion.predict, and nothing of training"
    args = make_parser().parse_args(['sample', '--run', str(run), '--per-class', '1', '--steps', '5', '--out', str(tmp_path/'p.png')])
    called = set()
    def prof(frame, event, arg):
        if event == 'call': called.add(frame.f_globals.get('__name__'))
    sys.setprofile(prof)
    try: args.func(args)
    finally: sys.setprofile(None)
    mods = {m for m in called if m and m.startswith('ddpm_course.')}
    assert {'ddpm_course.cli', 'ddpm_course.runs', 'ddpm_course.sampling', 'ddpm_course.diffusion', 'ddpm_course.guidance'} <= mods, mods
    assert not mods & {'ddpm_course.data', 'ddpm_course.training', 'ddpm_course.conditional', 'ddpm_course.evaluation', 'ddpm_course.checkpoints',
                       'ddpm_course.speed', 'ddpm_course.distributed', 'ddpm_course.trainer'}, mods


def test_a_log_gets_one_line_per_epoch_and_sample_every_0_writes_no_grids(tmp_path):
    "In a real process whose output goes to a pipe (as to a log file): no progress bars, a header, epochs from 1; no grids with 0"
    flags = [f for f in TINY if f != '--quiet'] + ['--epochs', '2', '--sample-every', '0']
    r = _run('train', '--out', tmp_path/'run', *flags)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [l.split() for l in r.stdout.splitlines()]
    head = next(i for i, l in enumerate(lines) if l[:3] == ['epoch', 'train_loss', 'valid_loss'])
    assert [l[0] for l in lines[head + 1:head + 3]] == ['1', '2'], r.stdout
    assert '\r' not in r.stdout and not list((tmp_path/'run'/'samples').glob('*.png'))


def test_preset_help_gives_sizes():
    h = ' '.join(_sub('train').format_help().split())      # (the help wraps to the terminal's width)
    for name in ('tiny', 'mini', 'small', 'seed'): assert f"{name}:" in h
    assert '3.9 M' in h and '15.7 M' in h


def _letter_folder(root, n=60, size=28):
    "n grayscale images of `size` px in 3 classes: a bright bar in a different place per class"
    rng = np.random.default_rng(0)
    for i in range(n):
        c = i % 3; (root/f'c{c}').mkdir(parents=True, exist_ok=True)
        a = rng.integers(0, 40, (size, size)).astype(np.uint8); a[:, 4 + 8 * c:8 + 8 * c] = 230
        Image.fromarray(a).save(root/f'c{c}'/f'{i}.png')
    return root


def test_no_flags_plans_from_the_data(tmp_path, monkeypatch, capsys):
    "A 28 px folder with no other flag: rounded to 32 with a line, the 32 px preset, a plan printed and stored, 25 whole passes"
    data = _letter_folder(tmp_path/'letters')
    monkeypatch.setattr('ddpm_course.speed.LOUD_FILES', 10)         # as for a large folder: say what is decoded, and where it is cached
    main(['train', '--dataset', str(data), '--out', str(tmp_path/'run'), '--wandb', 'off', '--sample-every', '0', '--T', '50', '--quiet'])
    out = capsys.readouterr().out
    assert 'size 28' not in out                                       # no --size given: 32 is the folder default
    assert 'decoding 60 images' in out and 'cached in' in out, out
    plan = load_run(tmp_path/'run')[1]
    assert plan['train']['preset'] == 'mini' and plan['data']['img_size'] == [32, 32]
    assert plan['plan']['epochs'] == 25 and plan['plan']['epoch_steps'] == 1 and '25 passes' in plan['plan']['why']
    assert "plan: 60 images (54 to train on, 3 classes) at 32x32x1; UNet 'mini'" in out and '25 steps of batch 32' in out, out
    assert 'measured' in out and 'about' in out                      # the estimate after the first timed steps
    main(['train', '--dataset', str(data), '--size', '28', '--steps', '30', '--out', str(tmp_path/'run2'), '--wandb', 'off',
          '--sample-every', '0', '--T', '50', '--quiet', '--preset', 'tiny'])
    out = capsys.readouterr().out
    assert 'decoding' not in out                                      # the second run reads the cache
    assert 'size 28: the UNet halves the resolution three times' in out and 'training at 32x32' in out
    cfg = load_run(tmp_path/'run2')[1]
    assert cfg['train']['size'] == 32 and cfg['plan']['epochs'] * cfg['plan']['epoch_steps'] == 30
    assert cfg['plan']['epoch_steps'] != 1                            # epochs longer than one pass over 54 images


def test_resume_keeps_the_plan(tmp_path, monkeypatch, capsys):
    "A run planned in steps, resumed to more epochs: the epochs keep their length"
    data = _letter_folder(tmp_path/'letters')
    base = ['--dataset', str(data), '--out', str(tmp_path/'run'), '--wandb', 'off', '--sample-every', '0', '--T', '50', '--quiet', '--preset', 'tiny']
    main(['train', *base, '--steps', '12'])
    p1 = load_run(tmp_path/'run')[1]['plan']
    main(['train', *base[:-2], '--resume', '--epochs', str(p1['epochs'] + 1)])
    out = capsys.readouterr().out
    assert f"resuming at epoch {p1['epochs'] + 1} of {p1['epochs'] + 1}" in out and f"of {p1['epoch_steps']}" in out, out
    last = sorted((tmp_path/'run'/'checkpoints').glob('epoch_*'))[-1]
    assert last.name == f"epoch_{p1['epochs'] + 1:04d}" and load_run(tmp_path/'run')[1]['plan'] == p1   # one more epoch, the plan kept


def _edit_files(tmp_path):
    "A 16x16 digit-like PNG and three masks for it: the bottom half, a grey one, and one of another size"
    from PIL import Image
    import numpy as np
    img = np.zeros((16, 16), np.uint8); img[3:13, 6:10] = 255
    Image.fromarray(img).save(tmp_path/'in.png')
    m = np.zeros((16, 16), np.uint8); m[8:] = 255
    Image.fromarray(m).save(tmp_path/'mask.png'); Image.fromarray(m // 2).save(tmp_path/'grey.png')
    Image.fromarray(m[:10]).save(tmp_path/'short.png')
    return tmp_path/'in.png'


@pytest.mark.parametrize('cmd, flags, msg', [
    ('edit', ['--strength', '1.5'], 'strength must be a number in [0, 1]'),
    ('edit', ['--strength', '-1'], 'strength must be a number in [0, 1]'),
    ('edit', ['--strength', '0.5', '--n', '0'], '--n must be at least 1'),
    ('edit', ['--strength', '0.5', '--steps', '0'], '--steps must be at least 1'),
    ('edit', ['--strength', '0.5', '--guidance', '2'], '--guidance needs labels: give --label K'),
    ('edit', ['--strength', '0.5', '--out', 'x.jpg'], '--out must name a .png file'),
    ('inpaint', ['--mask', 'mask.png', '--resample', '0'], '--resample must be at least 1'),
    ('inpaint', ['--mask', 'mask.png', '--jump', '0'], '--jump must be at least 1'),
    ('inpaint', ['--mask', 'mask.png', '--npz', 'x.png'], '--npz must name a .npz file'),
])
def test_edit_flags_are_refused_before_any_work(run, tmp_path, monkeypatch, cmd, flags, msg):
    "Bad flags of `inpaint` and `edit` are refused before the run is loaded, in one line, writing nothing"
    image = _edit_files(tmp_path)
    def boom(*a, **k): raise AssertionError("loaded the run before the flags were checked")
    monkeypatch.setattr('ddpm_course.runs.load_run', boom)
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.iterdir())
    code, err = _shell(monkeypatch, cmd, '--run', run, '--image', image, *flags)
    assert code == 1 and msg in err and len(err.strip().splitlines()) == 1, err
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize('mask, msg', [('grey.png', 'is not black and white'), ('short.png', 'is 16x10 but the image is 16x16'),
                                       ('missing.png', 'missing.png')])
def test_bad_masks_end_in_one_message(run, tmp_path, monkeypatch, mask, msg):
    image = _edit_files(tmp_path)
    code, err = _shell(monkeypatch, 'inpaint', '--run', run, '--image', image, '--mask', tmp_path/mask, '--out', tmp_path/'o.png')
    assert code == 1 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path/'o.png').exists()


def test_inpaint_and_edit_from_the_shell(run, tmp_path, monkeypatch, capsys):
    "The command fills in the mask keeping the rest exactly, and edits; both write their grid and .npz (run as the console script runs it)"
    import numpy as np
    image = _edit_files(tmp_path)
    code, out = run_shell(['inpaint', '--run', run, '--image', image, '--mask', tmp_path/'mask.png', '--n', '2', '--steps', '5', '--resample', '2',
                           '--out', tmp_path/'i.png', '--npz', tmp_path/'i.npz'], monkeypatch, capsys)
    assert code == 0, out
    z = np.load(tmp_path/'i.npz')['images']
    from PIL import Image
    src = np.asarray(Image.open(image))
    assert z.shape == (2, 16, 16, 1) and (z[:, :8, :, 0] == src[:8]).all()       # the kept top half, exactly
    assert (tmp_path/'i.png').exists()
    code, out = run_shell(['edit', '--run', run, '--image', image, '--strength', '0', '--out', tmp_path/'e.png', '--npz', tmp_path/'e.npz'], monkeypatch, capsys)
    assert code == 0 and 'edits at strength 0' in out, out
    assert (np.load(tmp_path/'e.npz')['images'][..., 0] == src).all() and (tmp_path/'e.png').exists()   # strength 0: the input


FRESH = ("import sys\nfrom ddpm_course.cli import main\ntry: main()\nexcept SystemExit as e: print('exit', e.code)\n"
         "print('loaded:', ' '.join(sorted(m for m in ('torch', 'fastai', 'matplotlib') if m in sys.modules)))")


@pytest.mark.parametrize('argv, words', [(['--help'], 'COMMAND'), (['train', '--help'], '--min-snr-gamma'), (['serve', '--help'], '--batch-wait-ms'),
                                         (['train', '--epochs', '0'], 'epochs (--epochs) must be a whole number of at least 1'),
                                         (['train', '--pred-type', 'noise'], "invalid choice: 'noise'"), (['sample', '--run', 'r', '--sampler', 'euler'], "invalid choice: 'euler'"),
                                         (['serve', '--run', 'r', '--max-n', '0'], '--max-n must be at least 1'), (['train', '--no-such-flag'], 'unrecognized arguments')])
def test_help_and_bad_flags_do_not_load_torch(argv, words):
    "In a fresh Python, as the console script starts: the help and a bad flag's message come before PyTorch (or fastai, or matplotlib) loads"
    r = subprocess.run([sys.executable, '-c', FRESH, *argv], capture_output=True, text=True, timeout=60)
    assert words in r.stdout + r.stderr, r.stdout + r.stderr
    assert r.stdout.strip().endswith('loaded:'), r.stdout[-300:]


def test_sampling_imports_no_training_stack():
    "`import ddpm_course.sampling` (and the modules a service of an ONNX export runs on) loads neither fastai nor matplotlib"
    code = ("import sys\nimport ddpm_course.sampling, ddpm_course.guidance, ddpm_course.runs, ddpm_course.export, ddpm_course.serve, ddpm_course.machine\n"
            "print(sorted(m for m in ('fastai', 'matplotlib') if m in sys.modules))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == '[]', r.stdout + r.stderr
