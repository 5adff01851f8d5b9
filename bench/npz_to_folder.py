"""Write an image folder `<out>/<class>/<i>.png` from a labelled .npz (`images` uint8 (N, H, W[, C]), `labels`, `class_names`):
the layout `ddpm_course train --dataset <folder>` reads. The recipes in README.md ("Real data") use it on ../shared/data.

    python bench/npz_to_folder.py ../shared/data/emnist_letters_train.npz /tmp/emnist60k --n 60000
    python bench/npz_to_folder.py ../shared/data/eurosat_rgb32.npz /tmp/eurosat --split 0
"""
import argparse
from pathlib import Path
import numpy as np
from PIL import Image

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('npz'); p.add_argument('out')
    p.add_argument('--n', type=int, default=None, help="a class-balanced random subset of this many images (default: all)")
    p.add_argument('--split', type=int, default=None, help="only the images whose `split` is this (EuroSAT: 0 train, 1 val, 2 test)")
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    d = np.load(a.npz)
    x, y, names = d['images'], d['labels'], [str(c) for c in d['class_names']]
    if a.split is not None: keep = d['split'] == a.split; x, y = x[keep], y[keep]
    idx = np.arange(len(y))
    if a.n is not None and a.n < len(y):      # the course's own class-balanced random subset (chapter 01)
        import torch
        from ddpm_course.data import balanced_subset
        idx = balanced_subset(torch.from_numpy(y), a.n, a.seed).numpy()
    out = Path(a.out)
    for c in names: (out/c).mkdir(parents=True, exist_ok=True)
    for i in idx: Image.fromarray(x[i]).save(out/names[y[i]]/f'{i:06d}.png')
    print(f"wrote {len(idx)} images of {len(names)} classes to {out}")

if __name__ == '__main__': main()
