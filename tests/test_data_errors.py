"Bad input to the data chapter gets a clear error that names the problem and the fix."
import time
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from ddpm_course.data import get_dls, load_images, DATASETS


def _folder(root: Path, classes=('a', 'b'), n=4, size=(12, 20), mode='RGB') -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root/c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).convert(mode).save(root/c/f'{i}.png')
    return root


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e: get_dls('imagenet')
    assert "unknown dataset 'imagenet'" in str(e.value)
    for name in DATASETS: assert name in str(e.value)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'): get_dls(tmp_path/'cats')


def test_folder_without_images(tmp_path):
    (tmp_path/'empty'/'sub').mkdir(parents=True)
    (tmp_path/'empty'/'notes.txt').write_text('no pictures here')
    with pytest.raises(ValueError, match='holds no images; expected'): get_dls(tmp_path/'empty')


def test_corrupt_image_names_the_file(tmp_path):
    root = _folder(tmp_path/'pets')
    (root/'b'/'truncated.png').write_bytes((root/'b'/'0.png').read_bytes()[:40])
    with pytest.raises(ValueError, match='truncated.png'): get_dls(root, size=16)


@pytest.mark.parametrize('size', [0, 4, 12, 30, (16, 20), -8])
def test_unusable_image_size(size):
    with pytest.raises(ValueError, match='multiples of 8'): get_dls('digits', size=size)


@pytest.mark.parametrize('bs', [0, -1, 2.5])
def test_batch_size_below_one(bs):
    with pytest.raises(ValueError, match='batch size'): get_dls('digits', bs=bs)


def test_bad_channels(tmp_path):
    with pytest.raises(ValueError, match='channels'): get_dls(_folder(tmp_path/'x'), size=16, channels=2)


def test_download_fails_fast_with_instructions(tmp_path):
    for name, hint in [('cifar10', 'cifar-10-python.tar.gz'), ('fashion_mnist', 'train-images-idx3-ubyte.gz')]:
        t0 = time.time()
        with pytest.raises(RuntimeError) as e: get_dls(name, root=tmp_path, download=False)
        assert time.time() - t0 < 60     # a guard against hanging on the network, not a speed test
        assert hint in str(e.value) and str(tmp_path) in str(e.value)


def test_folder_layouts(tmp_path):
    "Class subfolders give classes; a flat folder gives one class; grayscale stays 1 channel unless asked"
    dls = get_dls(_folder(tmp_path/'two', mode='L'), size=16, bs=2, valid_pct=0.25, device='cpu')
    assert dls.vocab == ['a', 'b'] and dls.n_channels == 1
    x, y = dls.one_batch()
    assert x.shape == (2, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
    flat = tmp_path/'flat'; flat.mkdir()
    for i in range(3): Image.new('RGB', (40, 24), (i * 50, 0, 0)).save(flat/f'{i}.jpg')
    x, y, classes = load_images(flat, size=(16, 24))
    assert classes == ['flat'] and x.shape == (3, 3, 16, 24) and (y == 0).all()
    assert load_images(tmp_path/'two', size=8, channels=3)[0].shape[1] == 3


def test_fake_fashion_mnist_loads(tmp_path):
    "The real FashionMNIST loader reads unpacked idx files placed by hand (as the error message tells a user to)"
    import struct
    raw = tmp_path/'FashionMNIST'/'raw'; raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in [('train', 20), ('t10k', 5)]:
        imgs = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        (raw/f'{split}-images-idx3-ubyte').write_bytes(struct.pack('>IIII', 2051, n, 28, 28) + imgs.tobytes())
        (raw/f'{split}-labels-idx1-ubyte').write_bytes(struct.pack('>II', 2049, n) + (np.arange(n) % 10).astype(np.uint8).tobytes())
    dls = get_dls('fashion_mnist', root=tmp_path, size=32, bs=4, download=False, device='cpu')
    assert dls.c == 10 and dls.n_channels == 1 and len(dls.train_ds) + len(dls.valid_ds) == 20
    assert dls.one_batch()[0].shape == (4, 1, 32, 32)
