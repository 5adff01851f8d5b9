"""What the benchmarks say about the machine they ran on."""
import platform


def cpu_name() -> str:
    "The CPU's model name from /proc/cpuinfo (the platform's processor name where there is none)"
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()
