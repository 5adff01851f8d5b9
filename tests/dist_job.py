"""A short conditional training run for test_distributed.py: `run_job(OUT, DUMP)` in one process (the test calls it in its
own), or this file under `accelerate launch --multi_gpu --num_processes N` (N processes); each rank writes what the test
compares into DUMP."""
import json, os, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from ddpm_course.settings import TrainConfig
from ddpm_course.trainer import train, build_run
from ddpm_course.training import ddpm_learner
from ddpm_course.diffusion import weights_of
from ddpm_course.checkpoints import find_cb
from ddpm_course.ema import EMACallback
from ddpm_course.distributed import distributed, close_distributed, launch_info

def run_job(out: Path, dump: Path):
    "Train the job into `out`; this rank writes what the test compares into `dump`"
    out, dump = Path(out), Path(dump)
    cfg = TrainConfig(preset='tiny', conditional=True, n=300, epochs=1, bs=32, lr=2e-3, seed=int(os.environ.get('DIST_JOB_SEED', 0)), wandb='offline', sample_every=1, n_samples=4)
    rank = launch_info()['rank']

    # the validation loss of the untrained model: the same images, the same noise, however many processes
    torch.manual_seed(cfg.seed)
    dls, model, sched = build_run(cfg, 'cpu')
    learn0 = ddpm_learner(model, dls, sched, cfg.pred_type)
    with distributed(learn0): v0 = float(learn0.validate()[0])

    learn = train(cfg, out, device='cpu', quiet=True)          # (train joins the launch's processes itself, chapter 19)
    ema = find_cb(learn, EMACallback).ema
    dump.mkdir(parents=True, exist_ok=True)
    save_file({**{f'model.{k}': v for k, v in weights_of(learn.model).items()},
               **{f'ema.{k}': v.detach().cpu().contiguous() for k, v in ema.shadow_state_dict().items()}}, str(dump/f'rank{rank}.safetensors'))
    (dump/f'rank{rank}.json').write_text(json.dumps({'valid_untrained': v0, 'train_loss': float(learn.recorder.values[-1][0]),
                                                     'valid_loss': float(learn.recorder.values[-1][1]), 'ema_steps': ema.num_updates,
                                                     'world_size': launch_info()['world_size'], 'per_process_bs': learn.dls.train.bs}))
    close_distributed()                       # (leaving it to the interpreter's exit can abort a rank)


if __name__ == '__main__': run_job(sys.argv[1], sys.argv[2])
