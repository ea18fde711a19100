#!/usr/bin/env bash
# Prepares what an offline GPU machine needs to run benchmarks/gpu_check.sh, in one ignored
# folder, .gpu-carry/, to copy (or carry) beside the repository:
#   .gpu-carry/whl/                        the notebook runner's wheels for Python 3.12 on x86-64
#                                          (benchmarks/gpu_requirements.txt), less what the image holds
#   .gpu-carry/data/FashionMNIST/raw/      Fashion-MNIST's four IDX files, gzipped (30 MB)
# Then, there:
#   PYTHON=python3 WHEELS=.gpu-carry/whl bash benchmarks/gpu_check.sh --data-root .gpu-carry/data
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry
PY_VERSION="${PY_VERSION:-3.12}"
mkdir -p "$CARRY/whl" "$CARRY/data/FashionMNIST/raw"
python3 -m pip download -q -d "$CARRY/whl" --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -r benchmarks/gpu_requirements.txt 2> >(grep -v "is ignored: it is neither" >&2)
# The lent CUDA image already holds these (its package list, 2026-11): leaving them out keeps the
# carried tree under the device tool's 64 MiB. pip says which one is missing if that ever changes.
for held in attrs certifi charset_normalizer click idna jinja2 markdown_it_py markupsafe mdurl packaging psutil \
            pygments python_dateutil pyyaml requests tqdm typing_extensions urllib3; do
  rm -f "$CARRY/whl/${held}"-[0-9]*.whl
done
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [[ -f "$CARRY/data/FashionMNIST/raw/$f.gz" ]] && continue
  cp "/usr/share/datasets/fashion-mnist/$f.gz" "$CARRY/data/FashionMNIST/raw/" \
    || { echo "gpu_carry: no $f.gz in /usr/share/datasets/fashion-mnist: run make data first" >&2; exit 1; }
done
du -sh "$CARRY/whl" "$CARRY/data"
