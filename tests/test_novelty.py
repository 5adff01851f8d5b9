"""Chapter 11's novelty check and precision / recall / density / coverage.

- Chapter 11's memorising run (`memorising_model`: chapter 08's `ddpm_learner`, Part I only, trained on a handful of
  digits until it copies them; shared with the chapter through chapter 01's cache) is flagged by `novelty`;
  real digits that no model saw, scored as if they were samples, are not.
- `prdc` and `knn_radii` give the values worked out by hand on tiny one-dimensional sets, with the strict `<` of the
  `prdc` package (a point exactly on a ball's edge is outside)."""
import numpy as np
import pytest
import scipy.stats
import torch
from ddpm_course.data import get_dls, load_images
from ddpm_course.evaluation import knn_radii, nearest_neighbours, novelty, prdc, sample_set, memorising_model, N_MEM

M = 100                                                  # samples drawn from the copier


def chance_bar(m: int, q: float = 0.05) -> float:
    "The share of `m` samples that a threshold with false-alarm rate `q` flags by chance, 99% of the time at most"
    return scipy.stats.binom.ppf(0.99, m, q) / m


@pytest.fixture(scope='module')
def copier():
    "Chapter 11's memorising run (a `tiny` unconditional v-model trained on 14 digits until it copies them): its samples, its training images and every other digit, in [0, 1]"
    x, _ = sample_set(memorising_model(), M, sampler='ddpm', steps=50, seed=0)
    train = get_dls('digits', n=N_MEM, device='cpu').train_ds.images.float() / 255
    every = load_images('digits')[0].float() / 255
    new = every[nearest_neighbours(every, train)[0] > 1e-6]                      # every digit it never saw
    return x, train, new


def test_copier_is_flagged(copier):
    x, train, new = copier
    nov = novelty(x, train, new)
    assert nov['share'] > 3 * chance_bar(len(x)), nov['share']                 # far above what chance flags
    assert np.median(nov['dist']) < np.median(nov['dist_heldout'])               # nearer to its training digits than new digits are


def test_new_real_digits_are_not_flagged(copier):
    _, train, new = copier
    perm = torch.randperm(len(new), generator=torch.Generator().manual_seed(0))
    calib, probe = new[perm[:len(new) // 2]], new[perm[len(new) // 2:]]          # half to place the threshold, half scored as samples
    nov = novelty(probe, train, calib)
    assert nov['share'] < chance_bar(len(probe)), nov['share']
    assert abs(nov['share'] - 0.05) < 0.03                                       # about the false-alarm rate q, not 0


def test_prdc_hand_worked():
    real = np.array([[0.], [1.], [2.], [3.]])
    # k = 1: every real radius is 1; 0.5 lies in the balls of 0 and 1, 10 in none; the samples' radii are 9.5, so recall is fooled
    assert prdc(real, np.array([[0.5], [10.]]), k=1) == dict(precision=0.5, recall=1.0, density=1.0, coverage=0.5)
    # k = 2 on uneven points: real radii 3, 2, 3, 5; sample radii 18, 13, 18
    real, fake = np.array([[0.], [1.], [3.], [6.]]), np.array([[2.], [7.], [20.]])
    np.testing.assert_allclose(knn_radii(real, k=2), [3, 2, 3, 5])
    np.testing.assert_allclose(knn_radii(fake, k=2), [18, 13, 18])
    m = prdc(real, fake, k=2)
    np.testing.assert_allclose([m['precision'], m['recall'], m['density'], m['coverage']], [2 / 3, 1, 5 / 6, 1])
    # strict '<': a sample exactly on the edge of a ball is outside it
    assert prdc(np.array([[0.], [1.], [2.]]), np.array([[3.], [9.]]), k=1)['precision'] == 0.0


def test_prdc_same_points_and_errors():
    f = np.random.default_rng(0).normal(size=(50, 3))
    m = prdc(f, f.copy())                                                        # samples = the real points: every sample in its own ball
    assert m['precision'] == m['recall'] == m['coverage'] == 1.0 and abs(m['density'] - 1) < 0.1   # (each point lies in its own ball and in k - 1 others', on average)
    with pytest.raises(ValueError, match='0 < k <'): prdc(f, f[:3])
    with pytest.raises(ValueError, match='uint8'): nearest_neighbours(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, 16))
