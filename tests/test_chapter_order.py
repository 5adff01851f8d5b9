"""The course's order is a rule: each chapter's module imports only modules of earlier chapters, and each notebook
imports only from its own and earlier chapters. A module or notebook that reaches forward breaks the course
(a learner reading in order meets a name that is defined later) and usually a cycle in the package.

And the course has two parts: Part I (chapters 00-13) is the course, Part II (from chapter 14, the run folders) the
engineering. Part I reads on its own: none of its modules or notebooks imports anything of Part II."""
import ast, json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, PKG = ROOT/'nbs', ROOT/'ddpm_course'
PART_II = 14          # the first chapter of Part II: run folders


def chapters() -> dict[str, int]:
    "module name -> chapter number, read from each notebook's `#| default_exp`"
    out = {}
    for nb in sorted(NBS.glob('[0-9][0-9]_*.ipynb')):
        src = '\n'.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')
        m = re.search(r'^#\|\s*default_exp[ \t]+(\S+)', src, flags=re.M)
        if m: out[m.group(1)] = int(nb.name[:2])
    return out


def imported_modules(tree: ast.AST, package: str = 'ddpm_course') -> set[str]:
    "The package's modules that a parsed source imports (relative or absolute)"
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module: mods.add(node.module.split('.')[0])
            elif node.level == 1: mods.update(a.name for a in node.names)
            elif node.module and node.module.startswith(package + '.'): mods.add(node.module.split('.')[1])
            elif node.module == package: mods.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            mods.update(a.name.split('.')[1] for a in node.names if a.name.startswith(package + '.'))
    return mods


def test_every_module_has_a_chapter():
    ch = chapters()
    modules = {p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_')}
    assert modules == set(ch), f"modules without a notebook: {modules - set(ch)}; notebooks without a module: {set(ch) - modules}"
    assert len(set(ch.values())) == len(ch), "two modules share a chapter number"


def test_modules_import_only_earlier_chapters():
    ch, bad = chapters(), []
    for mod, n in ch.items():
        for dep in imported_modules(ast.parse((PKG/f'{mod}.py').read_text())):
            if dep not in ch: bad.append(f"{mod} imports {dep}, which is no chapter's module")
            elif ch[dep] >= n and dep != mod: bad.append(f"{mod} (chapter {n:02d}) imports {dep} (chapter {ch[dep]:02d})")
    assert not bad, '\n'.join(bad)


def test_notebooks_import_only_earlier_chapters():
    ch, bad = chapters(), []
    for nb in sorted(NBS.glob('[0-9][0-9]_*.ipynb')):
        n = int(nb.name[:2])
        for cell in json.loads(nb.read_text())['cells']:
            if cell['cell_type'] != 'code': continue
            src = '\n'.join(l for l in ''.join(cell['source']).splitlines() if not l.lstrip().startswith(('%', '!')))
            try: tree = ast.parse(src)
            except SyntaxError: continue
            for dep in imported_modules(tree):
                if dep in ch and ch[dep] > n: bad.append(f"{nb.name} imports {dep} (chapter {ch[dep]:02d})")
    assert not bad, '\n'.join(bad)


def test_the_checker_catches_a_forward_import():
    "The rule above must be able to fail: a module of chapter 2 importing chapter 8's is caught"
    tree = ast.parse("from .training import TrainConfig\nfrom ddpm_course.cli import main\nimport ddpm_course.runs")
    assert imported_modules(tree) == {'training', 'cli', 'runs'}


def part_one_violations(ch: dict[str, int], imports: dict[str, set[str]]) -> list[str]:
    "The imports of Part I's modules (`imports`: module -> the modules it imports) that reach into Part II"
    return [f"{m} (chapter {ch[m]:02d}, Part I) imports {dep} (chapter {ch[dep]:02d}, Part II)"
            for m, deps in imports.items() if ch[m] < PART_II for dep in deps if dep in ch and ch[dep] >= PART_II]


def test_part_one_imports_nothing_of_part_two():
    ch = chapters()
    assert {m for m, n in ch.items() if n < PART_II} >= {'core', 'data', 'schedules', 'models', 'ema', 'diffusion', 'sampling', 'training'}
    assert {m for m, n in ch.items() if n >= PART_II} >= {'runs', 'settings', 'trainer', 'serve', 'cli'}
    mods = {m: imported_modules(ast.parse((PKG/f'{m}.py').read_text())) for m in ch}
    bad = part_one_violations(ch, mods)
    for nb in sorted(NBS.glob('[0-9][0-9]_*.ipynb')):
        if int(nb.name[:2]) >= PART_II: continue
        for cell in json.loads(nb.read_text())['cells']:
            if cell['cell_type'] != 'code': continue
            src = '\n'.join(l for l in ''.join(cell['source']).splitlines() if not l.lstrip().startswith(('%', '!')))
            try: deps = imported_modules(ast.parse(src))
            except SyntaxError: continue
            bad += [f"{nb.name} imports {d} (chapter {ch[d]:02d}, Part II)" for d in deps if d in ch and ch[d] >= PART_II]
    assert not bad, '\n'.join(bad)


def test_the_part_checker_catches_a_reach_into_part_two():
    assert part_one_violations({'sampling': 7, 'runs': 14}, {'sampling': {'runs'}, 'runs': set()}) == \
        ['sampling (chapter 07, Part I) imports runs (chapter 14, Part II)']
