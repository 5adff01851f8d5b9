"""What the benchmarks share: the machine they ran on, and runs trained by the command line as a user trains them."""
import platform, subprocess, sys
from pathlib import Path


def cpu_name() -> str:
    "The CPU's model name from /proc/cpuinfo (the platform's processor name where there is none)"
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def train_seconds(run) -> float:
    "The training seconds of a run, from its latest checkpoint's own history (no tensors loaded)"
    from ddpm_course.runs import read_config, latest_checkpoint
    from ddpm_course.serve import training_summary
    return float(training_summary(read_config(run), latest_checkpoint(run))['train_seconds'])


def train_run(out, *flags) -> float:
    "Train a run by `ddpm_course train` with `flags` (no grids, W&B off; --resume finishes a run cut short and leaves a finished one); its training seconds"
    cmd = ['-m', 'ddpm_course.cli', 'train', '--out', str(out), '--wandb', 'off', '--sample-every', '0', '--quiet', '--resume', *map(str, flags)]
    subprocess.run([sys.executable, *cmd], check=True, cwd=Path(__file__).resolve().parents[1])
    return train_seconds(out)
