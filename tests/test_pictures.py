"""Part I reads as a course: every chapter shows a picture within its first six cells, never goes more than ten cells
without one, and Part I as a whole has at least one picture per seven cells. A picture is an image in a code cell's
saved output (PNG, JPEG or SVG) or a Markdown image. The notebooks are committed with their outputs, so this reads them
as a learner opens them. (Part II, from chapter 14, is held to none of this.)"""
import json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PART_II = 14
FIRST, GAP, PER = 6, 10, 7          # a picture among the first 6 cells; at most 10 cells between two; one per 7 cells over Part I
PART_I = [nb for nb in sorted((ROOT/'nbs').glob('[0-9][0-9]_*.ipynb')) if int(nb.name[:2]) < PART_II]


def is_picture(cell: dict) -> bool:
    if cell['cell_type'] == 'markdown': return bool(re.search(r'!\[[^\]]*\]\(|<img ', ''.join(cell['source'])))
    return any(k in o.get('data', {}) for o in cell.get('outputs', []) for k in ('image/png', 'image/jpeg', 'image/svg+xml'))


def layout(cells: list[dict]) -> tuple[int | None, int, int]:
    "(index of the first picture, the longest run of cells without one, the number of pictures)"
    pics = [i for i, c in enumerate(cells) if is_picture(c)]
    gaps = [b - a - 1 for a, b in zip([-1] + pics, pics + [len(cells)])]
    return (pics[0] if pics else None), max(gaps), len(pics)


@pytest.mark.parametrize('nb', PART_I, ids=[p.stem for p in PART_I])
def test_a_picture_early_and_every_few_cells(nb):
    first, gap, n = layout(json.loads(nb.read_text())['cells'])
    assert first is not None and first < FIRST, f"{nb.name}: the first picture is cell {first}; it should be among the first {FIRST}"
    assert gap <= GAP, f"{nb.name}: {gap} cells in a row without a picture (at most {GAP})"


def test_part_one_has_a_picture_per_seven_cells():
    cells = pics = 0
    for nb in PART_I:
        cs = json.loads(nb.read_text())['cells']; cells += len(cs); pics += layout(cs)[2]
    assert pics and cells / pics <= PER, f"Part I: {pics} pictures in {cells} cells, one per {cells / max(pics, 1):.1f} (at most {PER})"


def test_the_rules_can_fail():
    md = lambda s: {'cell_type': 'markdown', 'source': [s]}
    img = {'cell_type': 'code', 'source': [], 'outputs': [{'data': {'image/png': 'x'}}]}
    assert layout([md('a')] * 7 + [img] + [md('b')] * 11) == (7, 11, 1)
    assert layout([md('![a](a.png)')] + [md('b')] * 3) == (0, 3, 1)
