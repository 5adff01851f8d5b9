"""What the benchmarks say about the machine they ran on."""
import platform


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
