#!/usr/bin/env bash
# Prepare the wheel folder that bench/gpu_check.sh installs from on a GPU machine without network.
#
# Usage: bash bench/gpu_wheels.sh DIR
#
# Run it where the package index can be reached. It downloads, for CPython 3.12 on manylinux
# x86_64 (override with GPU_PYTHON_VERSION=3.11 etc.), the binary wheels that the GPU check needs
# BESIDES torch, pinned to constraints.txt, with their dependencies. torch (and the nvidia-*
# libraries it pulls) is never downloaded: the GPU machine's own CUDA build of torch is used.
#
# Why these packages (what the GPU code paths import, checked with `python -X importtime`):
#   numpy                 everything (present beside most torch installs, but not guaranteed)
#   scipy                 services/risk/var.py (Monte Carlo VaR) and garch.py import it at module
#                         top; the CUDA test module imports scipy.stats too
#   pydantic (+ core, annotated-types, typing-inspection, typing-extensions)
#                         schemas/risk.py and schemas/common.py
#   sqlite-utils (+ click, click-default-group, sqlite-fts4, tabulate, python-dateutil, pluggy, pip)
#                         services/adapter.py -> registry.py, imported by the EnsembleModel and
#                         ExecutionModel classes (their registry side)
#   pytest (+ pluggy, iniconfig, packaging, pygments)
#                         the CUDA tests
# Not needed: fastapi/uvicorn, scikit-learn, hmmlearn, stable-baselines3, gymnasium, pandas,
# pyarrow (the server app and the RL code import them; they would not fit the 64 MiB budget).
#
# It fails if DIR ends up larger than 64 MiB.

set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: bash bench/gpu_wheels.sh DIR" >&2
    exit 2
fi
dir=$1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py_version=${GPU_PYTHON_VERSION:-3.12}
limit_mib=64
packages=(numpy scipy pydantic sqlite-utils pytest)

pip_cmd=()
if [[ -x "$repo/.venv/bin/python" ]]; then
    pip_cmd=("$repo/.venv/bin/python" -m pip)
else
    pip_cmd=(python3 -m pip)
fi

mkdir -p "$dir"
echo "downloading wheels for CPython $py_version manylinux x86_64 into $dir: ${packages[*]} (+ dependencies)"
"${pip_cmd[@]}" download --quiet --dest "$dir" --only-binary=:all: \
    --python-version "$py_version" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform linux_x86_64 \
    -c "$repo/constraints.txt" "${packages[@]}"

for f in "$dir"/*; do
    case "$(basename "$f")" in
        torch-*|nvidia_*|nvidia-*|triton-*)
            echo "ERROR: $f would shadow the GPU machine's own torch stack; remove it" >&2
            exit 1
            ;;
    esac
done

bytes=$(du -sb "$dir" | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo
ls -1 "$dir"
echo
echo "wheel folder: $dir, $(ls -1 "$dir" | wc -l) files, $mib MiB (limit $limit_mib MiB)"
if (( bytes > limit_mib * 1048576 )); then
    echo "ERROR: the wheel folder is over $limit_mib MiB ($mib MiB): it will not travel to the GPU machine" >&2
    exit 1
fi
