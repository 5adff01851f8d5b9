"""Start-up of a large image folder: the time and peak memory of `load_folder`, cold (decoding every file, then writing
the cache) and warm (reading the cache), each in a fresh process. Prints a Markdown table.

    python bench/npz_to_folder.py ../shared/data/emnist_letters_train.npz /tmp/emnist60k --n 60000
    python bench/folder_load.py /tmp/emnist60k --size 32
"""
import argparse, json, os, platform, shutil, subprocess, sys, time
from pathlib import Path

CHILD = r'''
import json, sys, time
t0 = time.time()
from ddpm_course.data import load_folder
from ddpm_course.speed import cached_decode
t1 = time.time()
x, y, classes = load_folder(sys.argv[1], int(sys.argv[2]), cache=cached_decode)
t2 = time.time()
hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))
print(json.dumps(dict(import_s=t1 - t0, load_s=t2 - t1, peak_rss_mib=hwm / 1024, n=len(x), shape=list(x.shape[1:]), mib=x.numel() / 2**20)))
'''

def run(folder, size):
    r = subprocess.run([sys.executable, '-c', CHILD, folder, str(size)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('folder'); p.add_argument('--size', type=int, default=32)
    a = p.parse_args()
    from ddpm_course.speed import cache_dir
    shutil.rmtree(cache_dir(Path(a.folder)), ignore_errors=True)
    rows = [('cold: decode every file, write the cache', run(a.folder, a.size)), ('warm: read the cache', run(a.folder, a.size))]
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
    print(f"{rows[0][1]['n']:,} images of {a.folder} at {a.size}x{a.size}, {rows[0][1]['shape']} each "
          f"({rows[0][1]['mib']:.0f} MiB as uint8); {cpu}, {os.cpu_count()} CPUs\n")
    print("| start-up | load_folder | peak memory of the process | import of ddpm_course.data |\n|---|---|---|---|")
    for name, r in rows: print(f"| {name} | {r['load_s']:.1f} s | {r['peak_rss_mib']:.0f} MiB | {r['import_s']:.1f} s |")

if __name__ == '__main__': main()
