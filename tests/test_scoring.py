"""`ddpm_course evaluate` beyond FID: near-copies and precision/recall/density/coverage in metrics.json beside their floors, the
two pictures it draws, and the service's model card, which shows the headline once a run has been evaluated."""
import json, shutil
import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file
from conftest import run_shell
import ddpm_course.scoring as scoring
from ddpm_course.data import SmallClassifier
from ddpm_course.evaluation import evaluate, real_features
from ddpm_course.runs import load_run
from ddpm_course.serve import open_run, model_card

PRDC = ('precision', 'recall', 'density', 'coverage')
EVAL = ['--n-per-class', '2', '--steps', '2', '--sampler', 'ddim', '--clf-epochs', '1', '--allow-weak-judge', '--device', 'cpu']


def _copy(src, tmp_path_factory, name):
    dst = tmp_path_factory.mktemp(name)/'run'; shutil.copytree(src, dst); return dst


def _card(run):
    d, _ = load_run(run); return model_card(d, open_run(run))


@pytest.fixture(scope='module')
def scored(tiny_run, tmp_path_factory):
    "A copy of the tiny conditional run (200 digits: 20 held out), its model card before, and `evaluate` of it: 20 samples, guidance 1 and 3"
    run = _copy(tiny_run, tmp_path_factory, 'scored')
    before = _card(run)
    mp = pytest.MonkeyPatch()
    try: code, out = run_shell(['evaluate', '--run', run, *EVAL, '--guidance', '1', '3'], mp)
    finally: mp.undo()
    assert code == 0, out
    return run, json.loads((run/'eval'/'metrics.json').read_text()), before


def test_prdc_beside_its_floor(scored):
    _, m, _ = scored
    for k in PRDC:
        assert 0 <= m[k] <= (np.inf if k == 'density' else 1) and 0 <= m['floor'][k] <= (np.inf if k == 'density' else 1), k
        assert all(k in r for r in m['guidance_sweep']), k
    assert m['prdc'] == dict(k=5, m=20, n_real=180, sets=1, floor_sets=1)         # 20 samples against the 20 held-out digits
    assert m['precision'] < m['floor']['precision'] - 0.3                           # a one-epoch model is far from real digits
    main = next(r for r in m['guidance_sweep'] if r['guidance'] == 3.)
    assert [main[k] for k in PRDC] == [m[k] for k in PRDC] and m['notes'] == []


def test_novelty_in_pixels_and_features(scored):
    _, m, _ = scored
    nv = m['novelty']
    assert nv['space'] == 'features' and nv['q'] == 0.05 and nv['share'] == nv['features']['share']
    for space in ('pixels', 'features'):
        b = nv[space]
        assert 0 <= b['share'] <= 1 and b['threshold'] > 0 and b['q'] == 0.05 and b['n_heldout'] == 20, space
        assert b['median_distance'] > 0 and b['median_distance_heldout'] > 0
    assert nv['threshold'] == nv['features']['threshold'] != nv['pixels']['threshold']


def test_existing_figures_are_unchanged(scored):
    "The rows that keep their samples for the new figures are `evaluate`'s rows, to the bit"
    run, m, _ = scored
    d, config = load_run(run)
    meta = json.loads((run/'eval'/'classifier.json').read_text())                    # the judge cached beside the scores (too weak to be reused)
    clf = SmallClassifier(meta['n_channels'], len(meta['vocab']), meta['width']).eval()
    clf.load_state_dict(load_file(run/'eval'/'classifier.safetensors')); dls = scoring.run_dls(config)
    f_train, _ = real_features(clf, dls)
    rows = evaluate(d, clf, f_train, [('ddim', 2, 3.), ('ddim', 2, 1.)], n=20)
    for got, want in zip([m['main'], m['guidance_sweep'][0]], rows):
        assert [got[k] for k in ('fid', 'kid', 'kid_std')] == [want[k] for k in ('fid', 'kid', 'kid_std')]
    assert m['main']['accuracy'] == pytest.approx(rows[0]['accuracy'])


def test_pictures_are_pngs(scored):
    run, _, _ = scored
    for name in ('nearest_training.png', 'fidelity_diversity.png', 'fid_vs_steps.png', 'guidance.png', 'confusion.png'):
        p = run/'eval'/name
        assert p.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', name
        with Image.open(p) as im: im.verify(); assert im.format == 'PNG' and min(im.size) > 100, name


def test_model_card_shows_the_headline_after_evaluate(scored):
    run, m, before = scored
    assert before['metrics'] is None                                                # not evaluated yet: a card without metrics
    got = _card(run)['metrics']
    assert got['main']['accuracy'] == m['main']['accuracy'] and got['main']['fid'] == m['main']['fid'] and got['floor_fid'] == m['floor']['fid']
    assert [got[k] for k in PRDC] == [m[k] for k in PRDC] and got['floor_prdc'] == {k: m['floor'][k] for k in PRDC}
    assert got['near_copy_share'] == m['novelty']['share'] and got['near_copy_q'] == 0.05


def test_model_card_survives_a_broken_metrics_file(scored, tmp_path_factory):
    run = _copy(scored[0], tmp_path_factory, 'broken')
    for text in ('[1, 2]', '{"main": ', 'null'):
        (run/'eval'/'metrics.json').write_text(text)
        assert _card(run)['metrics'] is None, text


def test_unconditional_and_too_few_for_prdc(tiny_urun, tmp_path_factory, monkeypatch, capsys):
    "One guidance: no trade-off plot. And figures that cannot be measured (here k-NN balls of 25 among 20) are a note, not a failure"
    run = _copy(tiny_urun, tmp_path_factory, 'uscored')
    monkeypatch.setattr(scoring, 'PRDC_K', 25)
    code, out = run_shell(['evaluate', '--run', run, *EVAL], monkeypatch, capsys)
    assert code == 0, out
    m = json.loads((run/'eval'/'metrics.json').read_text())
    assert all(m[k] is None for k in PRDC) and m['prdc'] is None and 'precision' not in m['floor'] and m['floor']['fid'] > 0
    assert 'too few for k-NN balls with k = 25' in m['notes'][0] and 'NOTE: precision, recall, density and coverage not measured' in out
    assert 0 <= m['novelty']['share'] <= 1 and (run/'eval'/'nearest_training.png').exists()
    assert not (run/'eval'/'fidelity_diversity.png').exists() and m['guidance_sweep'] == []
    assert _card(run)['metrics']['precision'] is None and _card(run)['metrics']['near_copy_share'] == m['novelty']['share']
