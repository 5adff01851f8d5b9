"""Chapter 19 for real: two CPU processes (gloo) started by `accelerate launch`, against one process with the same global batch.
The launches take about a minute in all on 2 cores."""
import hashlib, json, os, shutil, socket, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file
from conftest import PACKAGE
from ddpm_course.data import cached, source_key

BIN = Path(sys.executable).parent
JOB = Path(__file__).parent/'dist_job.py'


def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _env(**kw):
    env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')}
    return {**env, 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true', 'CUDA_VISIBLE_DEVICES': '', **kw}


def _launch(n, *args, timeout=600):
    "`accelerate launch` n CPU processes (--multi_gpu is its multi-process launcher; without GPUs the processes use gloo)"
    cmd = [str(BIN/'accelerate'), 'launch', '--multi_gpu', '--num_processes', str(n), '--num_machines', '1', '--mixed_precision', 'no',
           '--dynamo_backend', 'no', '--main_process_port', str(_free_port()), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


@pytest.fixture(scope='module')
def runs():
    "The same job in one process (this one) and in two: run once for both pytest workers (chapter 01's cache, keyed by the job and the package's code)"
    def make(folder):
        tmp = folder/'dist'
        from dist_job import run_job
        run_job(tmp/'one'/'run', tmp/'one'/'dump')                              # one process: this one
        two = _launch(2, JOB, tmp/'two'/'run', tmp/'two'/'dump')
        assert two.returncode == 0, two.stderr[-3000:]
    return cached('test-distributed', make, hashlib.sha1(JOB.read_bytes()).hexdigest(), source_key(*PACKAGE))/'dist'


def _dump(d, r): return json.loads((d/f'rank{r}.json').read_text()), load_file(str(d/f'rank{r}.safetensors'))


def test_ranks_end_with_identical_weights_and_ema(runs):
    (m0, w0), (m1, w1) = _dump(runs/'two'/'dump', 0), _dump(runs/'two'/'dump', 1)
    assert m0['world_size'] == 2 and m0['per_process_bs'] == 16        # --bs 32 is the global batch
    assert w0.keys() == w1.keys() and any(k.startswith('ema.') for k in w0)
    for k in w0: assert torch.equal(w0[k], w1[k]), k
    assert any(not torch.equal(w0[k], w0[k.replace('model.', 'ema.', 1)]) for k in w0 if k.startswith('model.'))   # the EMA is not the weights


def test_only_rank_0_writes_one_run_folder(runs):
    two = runs/'two'
    assert sorted(p.name for p in two.iterdir()) == ['dump', 'run']
    run = two/'run'
    assert sorted(p.name for p in (run/'checkpoints').iterdir()) == ['epoch_0001']
    assert sorted(p.name for p in (run/'samples').iterdir()) == ['epoch_0001.png']
    assert len(list((run/'wandb').glob('offline-run-*'))) == 1
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in (runs/'one'/'run').iterdir())


def test_matches_one_process_with_the_same_global_batch(runs):
    one, _ = _dump(runs/'one'/'dump', 0)
    two, _ = _dump(runs/'two'/'dump', 0)
    # the same images with the same noise, and the ranks' losses averaged: the untrained model's validation loss is the same number
    assert abs(one['valid_untrained'] - two['valid_untrained']) < 1e-5 * one['valid_untrained']
    assert one['ema_steps'] == two['ema_steps'] > 0                        # as many optimizer steps (and EMA updates) per epoch
    # Training draws other noise on two ranks, so the losses after one epoch (8 steps) differ by chance. Measured on seeds 0-3:
    # |difference| up to 3.6% (train) and 6.3% (valid); one process alone, over 6 noise seeds, spans 10% (train) and 4% (valid).
    for k in ('train_loss', 'valid_loss'): assert abs(one[k] - two[k]) < 0.10 * one[k], (k, one[k], two[k])


def test_resume_under_two_processes(runs, tmp_path):
    "The two-process run continues from its checkpoint, with the command line, under the same launcher"
    run = tmp_path/'run'; shutil.copytree(runs/'two'/'run', run)
    # the run keeps its own settings (W&B offline included): --epochs is the one training flag --resume may change
    r = _launch(2, '-m', 'ddpm_course.cli', 'train', '--resume', '--epochs', '2', '--device', 'cpu', '--out', run, '--quiet')
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('resuming') == 1                                       # rank 0 alone prints
    assert sorted(p.name for p in (run/'checkpoints').iterdir()) == ['epoch_0001', 'epoch_0002']
    assert (run/'latest').read_text().strip().endswith('epoch_0002')
    assert json.loads((run/'checkpoints'/'epoch_0002'/'state.json').read_text())['epoch'] == 2


def test_batch_that_does_not_divide_is_refused_at_once(tmp_path):
    r = _launch(2, '-m', 'ddpm_course.cli', 'train', '--device', 'cpu', '--preset', 'tiny', '--bs', '31', '--out', tmp_path/'r', '--wandb', 'off', timeout=300)
    assert r.returncode != 0 and 'the global batch size 31 does not divide among 2 processes' in r.stderr, r.stderr[-2000:]
    assert not (tmp_path/'r').exists()


def test_missing_process_stops_with_a_message_not_a_hang(tmp_path):
    "One process that was told WORLD_SIZE=2: the other never comes; it must give up after DDPM_DIST_TIMEOUT"
    env = _env(RANK='0', LOCAL_RANK='0', WORLD_SIZE='2', LOCAL_WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(_free_port()), DDPM_DIST_TIMEOUT='1')
    t0 = time.time()
    r = subprocess.run([str(BIN/'ddpm_course'), 'train', '--device', 'cpu', '--preset', 'tiny', '--out', tmp_path/'r', '--wandb', 'off'],
                       capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode != 0 and 'WORLD_SIZE=2 waited 1 s' in r.stderr and 'not all processes joined' in r.stderr, r.stderr[-2000:]
    assert time.time() - t0 < 120
    assert not (tmp_path/'r').exists()


def test_inconsistent_environment_is_refused(tmp_path):
    env = _env(RANK='3', LOCAL_RANK='0', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(_free_port()))
    r = subprocess.run([str(BIN/'ddpm_course'), 'train', '--device', 'cpu', '--preset', 'tiny', '--out', tmp_path/'r', '--wandb', 'off'],
                       capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode != 0 and 'RANK=3 but WORLD_SIZE=2' in r.stderr, r.stderr[-2000:]
