#!/usr/bin/env bash
# Download the wheels listed in bench/gpu_wheels.txt into .whl/ at the repo root, for a bare GPU machine
# (Python 3.12, torch preinstalled, no internet) that then runs `bash bench/gpu.sh` (install: bench/gpu_install.sh).
# Run this on a machine that reaches the package index; then carry .whl/ along with the repo.
#
# Each package is fetched as a pure-python wheel (py3-none-any) when one exists, so the same files install on
# any CPython 3.x; otherwise as a CPython 3.12 manylinux x86_64 wheel. Usage: bash bench/fetch_wheels.sh [DEST]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIST="$REPO/bench/gpu_wheels.txt"
DEST="${1:-$REPO/.whl}"
PY="${PYTHON:-python3}"
mkdir -p "$DEST"

PURE=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform any)
BINARY=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)

# pip also prints a warning for each local index folder that lacks a package: keep only real problems
quiet() { grep -v "^WARNING: Location '.*' is ignored" || true; }

n=0
while read -r req _; do
  case "$req" in ''|'#'*) continue ;; esac
  n=$((n+1))
  if "$PY" -m pip download -q "${PURE[@]}" -d "$DEST" "$req" 2>/dev/null; then continue; fi
  echo "fetch_wheels: no pure-python wheel for $req, fetching the cp312 manylinux one" >&2
  "$PY" -m pip download -q "${BINARY[@]}" -d "$DEST" "$req" 2> >(quiet >&2) \
    || { echo "fetch_wheels: FAILED to download $req" >&2; exit 1; }
done < "$LIST"

# drop wheels left from an older list, so that .whl/ holds exactly what the list names
"$PY" - "$LIST" "$DEST" <<'EOF'
import re, sys, pathlib
norm = lambda s: re.sub(r'[-_.]+', '_', s).lower()
want = {norm(l.split('==')[0]) + '-' + l.split('==')[1].strip()
        for l in open(sys.argv[1]) if l.strip() and not l.startswith('#')}
for w in pathlib.Path(sys.argv[2]).glob('*.whl'):
    name, ver = w.name.split('-')[:2]
    if norm(name) + '-' + ver not in want: print('fetch_wheels: removing stale', w.name); w.unlink()
EOF
total=$(du -ch "$DEST"/*.whl | tail -1 | cut -f1)
echo "fetch_wheels: $(ls "$DEST"/*.whl | wc -l) wheels for $n requirements in $DEST ($total)"
