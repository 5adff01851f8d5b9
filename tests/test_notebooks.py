"""Every notebook of the course, run top to bottom as `nbdev_test` runs it: nbdev's own `test_nb`, skipping the cells
flagged with settings.ini's `tst_flags` (`#| slow`, `#| gpu`). One test a notebook, so that pytest-xdist spreads the
notebooks and the other tests over the cores together (`make test`); `nbdev_test` runs the same notebooks the same way.
One difference: every figure is drawn as a plain PNG rather than nbdev's retina one (twice the resolution, four times the
pixels), since a test keeps no picture: the same figures, drawn in full, at the resolution the notebooks commit them in."""
from functools import partial
from pathlib import Path
import pytest
import nbdev.test
from execnb.shell import CaptureShell
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook      # (renamed: pytest would collect a `test_` function as a test)

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted((ROOT/'nbs').glob('[0-9][0-9]_*.ipynb'))


@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb, monkeypatch):
    monkeypatch.setattr(nbdev.test, 'CaptureShell', partial(CaptureShell, mpl_format='png'))   # (test_nb makes its shell with retina)
    flags = get_config(path=ROOT).tst_flags.split()
    ok, _ = run_notebook(nb, skip_flags=flags, basepath=ROOT)
    assert ok, f"{nb.name} failed: its traceback is in the captured stderr above"
