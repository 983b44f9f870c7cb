#!/usr/bin/env bash
# GPU check: the server-side CUDA tests, then bench/gpu_check.py (CUDA against CPU), one table.
#
# Usage: bash bench/gpu_check.sh [WHEEL_DIR]        (WHEEL_DIR defaults to build/gpu-wheels)
#
# Meant for a machine with a CUDA device, its own Python (3.12) with a CUDA build of torch, and no
# network. Everything else comes from WHEEL_DIR, prepared beforehand with bench/gpu_wheels.sh:
#
# 1. the Python: $GPU_PYTHON, else python3.12, else python3; it must import torch;
# 2. if that Python already imports numpy, scipy, pydantic, sqlite_utils and pytest, it is used as
#    it is; otherwise a virtual environment with --system-site-packages (so the machine's torch
#    is used) is made in $GPU_CHECK_VENV (default: a temporary folder) and the missing packages
#    are installed into it from WHEEL_DIR only (pip --no-index; packages already there are kept);
# 3. the repository is used in place (PYTHONPATH), nothing is installed from it;
# 4. the CUDA tests (pytest -k cuda on the test modules that have them, without the suite's
#    conftest files, which need the whole server stack), bounded by `timeout`;
# 5. bench/gpu_check.py, bounded by `timeout`, prints the table.
#
# Exit status: 0 all checks passed on CUDA; 2 no CUDA device (the CPU rows still ran); 1 a check
# or a test failed; 3 the environment could not be set up.

set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
wheels=${1:-$repo/build/gpu-wheels}
started=$(date +%s)

say() { printf '\n=== %s\n' "$*"; }
die() { printf '\nGPU CHECK NOT RUN: %s\n' "$*" >&2; exit 3; }

# --- 1. the Python with torch ---------------------------------------------------------------------
py=${GPU_PYTHON:-}
if [[ -z $py ]]; then
    for candidate in python3.12 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then py=$(command -v "$candidate"); break; fi
    done
fi
[[ -n $py ]] || die "no python3.12 or python3 on PATH (set GPU_PYTHON)"
"$py" -c "import torch" 2>/dev/null || die "$py cannot import torch (the GPU machine's own CUDA torch is expected)"
say "python: $py ($("$py" -c 'import platform; print(platform.python_version())'))"

# --- 2. the other packages, from the wheel folder -------------------------------------------------
needed="numpy scipy pydantic sqlite_utils pytest"
has_all() {
    "$1" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in '$needed'.split()))"
}
if has_all "$py"; then
    say "numpy, scipy, pydantic, sqlite_utils and pytest already importable: no install"
else
    [[ -d $wheels ]] || die "packages missing and no wheel folder at $wheels (make one with bench/gpu_wheels.sh)"
    venv=${GPU_CHECK_VENV:-$(mktemp -d "${TMPDIR:-/tmp}/quantcrew-gpu-venv.XXXXXX")}
    say "making a virtual environment at $venv (system site packages: the machine's torch) from $wheels"
    target=()
    if [[ ! -x $venv/bin/python ]] && ! "$py" -m venv --system-site-packages --without-pip "$venv"; then
        # no venv module: install into a plain folder put first on PYTHONPATH instead
        echo "python -m venv failed: installing into $venv/site instead"
        target=(--target "$venv/site")
        export PYTHONPATH="$venv/site${PYTHONPATH:+:$PYTHONPATH}"
    else
        py=$venv/bin/python
    fi
    # pip itself comes from the wheel folder (a wheel runs as a zip), so the venv needs no ensurepip
    pip_wheel=$(ls "$wheels"/pip-*.whl 2>/dev/null | head -n 1)
    if [[ -n $pip_wheel ]]; then
        pip=("$py" "$pip_wheel/pip")
    else
        pip=("$py" -m pip)
    fi
    # only wheels matching this Python are taken: a folder made for 3.12 does not install on 3.11
    "${pip[@]}" install --quiet --disable-pip-version-check --root-user-action=ignore \
        --no-index --find-links "$wheels" "${target[@]}" numpy scipy pydantic sqlite-utils pytest \
        || die "pip install from $wheels failed (was the folder made for this Python's version: GPU_PYTHON_VERSION?)"
    has_all "$py" || die "packages still missing after the install"
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
"$py" -c "import torch; print('torch', torch.__version__, '| CUDA build', torch.version.cuda, '| cuda available:',
torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE')"

# --- 4. the CUDA tests ----------------------------------------------------------------------------
cd "$repo" || die "cannot cd to $repo"
mapfile -t test_files < <(grep -rl "cuda.is_available" tests --include='test_*.py' | sort)
say "CUDA tests: pytest -k cuda ${test_files[*]}"
test_log=$(mktemp)
timeout 150 "$py" -m pytest -q -rs -p no:cacheprovider --noconftest -o addopts="" \
    -W ignore::pytest.PytestConfigWarning -k cuda "${test_files[@]}" 2>&1 | tee "$test_log"
tests_rc=${PIPESTATUS[0]}
tests_summary=$(grep -E "passed|failed|skipped|error|no tests ran" "$test_log" | tail -n 1 | tr -d '=' \
    | sed -E 's/,? *[0-9]+ warnings?//; s/ in [0-9.]+s.*//' | xargs)
[[ $tests_rc -eq 124 ]] && tests_summary="timed out after 150 s"
if ! "$py" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    # without a GPU the CUDA test is skipped: the run is not a GPU check, whatever pytest says
    [[ $tests_rc -eq 0 ]] && tests_summary="$tests_summary (no CUDA device)"
fi
rm -f "$test_log"

# --- 5. the bench ---------------------------------------------------------------------------------
say "bench/gpu_check.py ${GPU_CHECK_ARGS:-}"
limit=${GPU_CHECK_TIMEOUT:-270}
timeout -k 20 "$limit" "$py" bench/gpu_check.py --tests "${tests_summary:-no summary}" --tests-rc "$tests_rc" \
    ${GPU_CHECK_ARGS:-}
bench_rc=$?
if [[ $bench_rc -eq 124 ]]; then
    echo "GPU CHECK FAILED: bench/gpu_check.py timed out after $limit s" >&2
    bench_rc=1
fi
say "GPU check finished in $(( $(date +%s) - started )) s (bench exit status $bench_rc, tests $tests_rc)"
if [[ $bench_rc -eq 0 && $tests_rc -ne 0 ]]; then
    exit 1
fi
exit "$bench_rc"
