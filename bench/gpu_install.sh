# Install step of bench/gpu.sh, for a bare GPU machine (Python 3.12 with torch and the usual scientific stack,
# no internet, no fastai/nbdev): `source bench/gpu_install.sh || exit 1`.
#
# Installs the wheels of bench/gpu_wheels.txt from .whl/ (filled by `bash bench/fetch_wheels.sh` on a machine
# that reaches the package index) into $SITE (default /tmp/site) with pip --target, skipping those the machine
# already has at the same version, and leaves the caller with:
#   PYTHONPATH=$SITE:$REPO   the course package is used from the working tree, not pip-installed
#                            (setup.py pins another torch than the one the machine has)
#   NBDEV_TEST               python3 -m nbdev.test          e.g. $NBDEV_TEST --flags gpu --path nbs/08_unconditional.ipynb
#   NBDEV_EXPORT             python3 $SITE/bin/nbdev_export (console scripts are not on PATH with --target)
#   nbdev_test, nbdev_export shell functions doing the same
#   MPLBACKEND=Agg, WANDB_MODE=offline, WANDB_SILENT=true unless already set
# Settings: SITE, WHL (wheel folder, default $REPO/.whl), PYTHON or PY (default python3). Sets REPO (the repo root).
# Being sourced, it never exits the caller's shell: on failure it prints one line starting with "gpu_install:" and returns 1.

_gpu_install() {
  local whl py list stamp files
  REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
  SITE="${SITE:-/tmp/site}"
  whl="${WHL:-$REPO/.whl}"
  py="${PYTHON:-${PY:-python3}}"
  list="$REPO/bench/gpu_wheels.txt"

  command -v "$py" >/dev/null 2>&1 || { echo "gpu_install: no $py on PATH" >&2; return 1; }
  if ! compgen -G "$whl/*.whl" >/dev/null; then
    echo "gpu_install: no wheels in $whl: run bash bench/fetch_wheels.sh on a machine with the package index, and carry .whl" >&2
    return 1
  fi

  # which wheels to install: every listed one must be there; skip those the machine has at the same version
  files="$(env -u PYTHONPATH "$py" - "$list" "$whl" <<'EOF'
import re, sys, pathlib
from importlib.metadata import distributions
norm = lambda s: re.sub(r'[-_.]+', '_', s).lower()
want = [l.split('==') for l in open(sys.argv[1]).read().split('\n') if l.strip() and not l.startswith('#')]
wheels = {}
for w in pathlib.Path(sys.argv[2]).glob('*.whl'):
    name, ver = w.name.split('-')[:2]; wheels[norm(name), ver] = w
have = {(norm(d.metadata['Name'] or ''), d.version) for d in distributions()}
missing = [f'{n}=={v}' for n, v in want if (norm(n), v.strip()) not in wheels]
if missing: print(f'{len(missing)} of {len(want)} listed wheels missing (' + ' '.join(missing[:3]) + (' ...' if len(missing) > 3 else '') + ')'); sys.exit(1)
todo = [str(wheels[norm(n), v.strip()]) for n, v in want if (norm(n), v.strip()) not in have]
print('\n'.join(todo))
print(f'gpu_install: {len(todo)} of {len(want)} wheels to install, {len(want) - len(todo)} already on this machine', file=sys.stderr)
EOF
)" || {
    echo "gpu_install: ${files:-the wheel check failed} in $whl: run bash bench/fetch_wheels.sh on a machine with the package index, and carry .whl" >&2
    return 1
  }

  # the same wheel set already installed into $SITE (a second source in one session): keep it
  stamp="$(printf '%s\n' "$files" | sha1sum | cut -d' ' -f1)"
  if [ -n "$files" ] && [ "$(cat "$SITE/.gpu_wheels.stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "gpu_install: installing into $SITE with $("$py" -m pip --version | cut -d' ' -f1-2)" >&2
    mapfile -t _gi_files <<<"$files"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        --disable-pip-version-check "${_gi_files[@]}" || {
      unset _gi_files
      echo "gpu_install: pip install into $SITE failed (the binary wheels are CPython 3.12 x86_64; this is $("$py" -V 2>&1))" >&2
      return 1
    }
    unset _gi_files
    echo "$stamp" > "$SITE/.gpu_wheels.stamp"
  else
    echo "gpu_install: $SITE is up to date" >&2
  fi

  case ":${PYTHONPATH:-}:" in *":$SITE:$REPO:"*) ;; *) export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}" ;; esac
  export MPLBACKEND="${MPLBACKEND:-Agg}" WANDB_MODE="${WANDB_MODE:-offline}" WANDB_SILENT="${WANDB_SILENT:-true}"

  # the course and its test tools import, from $SITE and the working tree
  local out
  out="$(cd "$REPO" && "$py" -c '
import torch, ddpm_course, ddpm_course.cli, ddpm_course.training, ddpm_course.evaluation, nbdev.test, execnb.shell, wandb
print(f"gpu_install: ok: torch {torch.__version__} (cuda {torch.cuda.is_available()}), ddpm_course from {ddpm_course.__file__.rsplit(chr(47), 2)[0]}")' 2>&1)" || {
    echo "gpu_install: the import check failed: $(printf '%s\n' "$out" | tail -1)" >&2
    return 1
  }
  echo "$out" >&2

  # pip --target writes the console scripts to $SITE/bin; write nbdev_export's wrapper if this pip did not
  # (fastcore's call_parse reads sys.argv only when the function is called from a script file: `python3 -c` won't do)
  [ -f "$SITE/bin/nbdev_export" ] || { mkdir -p "$SITE/bin" && printf '%s\n' 'import sys' 'from nbdev.doclinks import nbdev_export' \
      'if __name__ == "__main__": sys.exit(nbdev_export())' > "$SITE/bin/nbdev_export"; } || return 1
  NBDEV_TEST="$py -m nbdev.test"
  NBDEV_EXPORT="$py $SITE/bin/nbdev_export"
  export NBDEV_TEST NBDEV_EXPORT
}

nbdev_test() { ${NBDEV_TEST:?source bench/gpu_install.sh first} "$@"; }
nbdev_export() { ${NBDEV_EXPORT:?source bench/gpu_install.sh first} "$@"; }

if _gpu_install; then unset -f _gpu_install; else unset -f _gpu_install; return 1 2>/dev/null || exit 1; fi
