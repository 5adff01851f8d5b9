"""What each part of `make test` costs: runs the suite as `make test` does (pytest-xdist, 2 workers, one torch thread each;
beside them, in a third process, the precision tests again under the other DDPM_CPU_BF16) with JUnit XML reports, and writes
a table of each notebook's and each test file's time, summed over its tests, with the wall time of each run and of all.

    .venv/bin/python bench/test_times.py                      # prints the table
    .venv/bin/python bench/test_times.py --out bench/test_times.md --fresh   # --fresh: empty chapter 01's cache first, as CI does

The sums are the time each part kept a worker busy; two workers run at once, so the wall time is about half their total.
"""
import argparse, json, os, platform, shutil, subprocess, sys, tempfile, time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def cpu_name() -> str:
    try: return next(l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or platform.machine()


def start(args: list[str], env: dict, xml: Path, log=None) -> subprocess.Popen:
    return subprocess.Popen([PY, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', f'--junitxml={xml}', *args, 'tests'], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT if log else None)


def parts(xml: Path) -> dict[str, float]:
    "seconds by part: a notebook (test_notebooks.py's cases) or a test file"
    out = defaultdict(float)
    if not xml.exists(): return out
    for tc in ET.parse(xml).iter('testcase'):
        name, cls = tc.get('name', ''), tc.get('classname', '')
        key = f"nbs/{name.split('[', 1)[1][:-1]}.ipynb" if cls.endswith('test_notebooks') and '[' in name else f"{cls.replace('.', '/')}.py"
        out[key] += float(tc.get('time', 0))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default=None, help="write the table (Markdown) here too")
    p.add_argument('--fresh', action='store_true', help="empty the cache of trained models and judges first (chapter 01's `cache_root`), as a fresh machine has it")
    a = p.parse_args()
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true', 'MPLBACKEND': 'Agg'}
    env.pop('DDPM_CPU_BF16', None)
    sys.path.insert(0, str(ROOT))
    from ddpm_course.data import cache_root
    from ddpm_course.machine import cpu_has_bf16
    if a.fresh: shutil.rmtree(cache_root(), ignore_errors=True)
    other = str(int(not cpu_has_bf16()))
    tmp = Path(tempfile.mkdtemp())
    # as make test runs them: the main run, and beside it (a third process) the precision tests under the other setting
    stages = [('notebooks and tests, 2 workers', ['-n', '2', '--dist', 'loadscope', '--no-loadscope-reorder'], env),
              (f'beside it: the precision tests again, DDPM_CPU_BF16={other}, 1 process', ['-m', 'precision', f'--basetemp={tmp/"bt"}'],
               {**env, 'DDPM_CPU_BF16': other})]
    t0, log = time.time(), open(tmp/'other.log', 'w+')
    procs = [start(args, e, tmp/f'{k}.xml', log if k else None) for k, (_, args, e) in enumerate(stages)]
    walls, by_part, failed, ends = [], defaultdict(dict), [], [None, None]
    while None in ends:
        for k, p in enumerate(procs):
            if ends[k] is None and p.poll() is not None: ends[k] = time.time()
        time.sleep(0.2)
    log.seek(0); print(log.read())
    for k, (stage, _, _) in enumerate(stages):
        walls.append((stage, ends[k] - t0))
        if procs[k].returncode: failed.append(stage)
        for part, s in parts(tmp/f'{k}.xml').items(): by_part[part][k] = s
    total = max(ends) - t0
    lines = [f"`make test`'s parts on {cpu_name()} ({os.cpu_count()} cores, bf16 instructions: {'yes' if cpu_has_bf16() else 'no'}), "
             f"{'an empty cache (as CI has it)' if a.fresh else 'the cache as it was'}; {time.strftime('%Y-%m-%d')}.", '',
             '| run | ends at, s |', '|---|---|'] + [f"| {s} | {w:.0f} |" for s, w in walls] + [f"| **all** | **{total:.0f}** |", '',
             '| part | s | s (other precision) |', '|---|---|---|']
    for part in sorted(by_part, key=lambda q: (not q.startswith('nbs'), q)):
        cells = [f"{by_part[part][k]:.0f}" if k in by_part[part] else '' for k in range(2)]
        lines.append(f"| `{part}` | {' | '.join(cells)} |")
    if failed: lines += ['', f"FAILED stages: {', '.join(failed)}"]
    table = '\n'.join(lines); print(table)
    if a.out:
        Path(a.out).write_text(table + '\n')
        # the main stage's seconds by part: conftest.py starts the longest parts first, so that the two workers end together
        Path(a.out).with_suffix('.json').write_text(json.dumps({k: round(v.get(0, 0), 1) for k, v in by_part.items()}, indent=1, sort_keys=True) + '\n')
    sys.exit(1 if failed else 0)


if __name__ == '__main__': main()
