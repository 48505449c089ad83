#!/usr/bin/env bash
# The GPU part of the study (issue 8): depth-100 width-1024 MLP and depth-50 convnet on MNIST-1D.
# Prepared, NOT yet run: no GPU machine was lent to the sessions so far.
# Usage on the GPU machine, from the repository root:  bash studies/gpu.sh [SECONDS] [--quick]
# Cells run in the configs' priority order (DKS+K-FAC and the ResNet-BN baselines first) and are
# recorded as they finish, so a time-limited run keeps what it finished; rerunning resumes.
# Needs: jax with a GPU backend, optax, numpy, scipy, sympy, mpmath, mnist1d. Without kfac-jax
# (jax > 0.9.1) K-FAC is the trainer's own implementation (Dense and Conv layers).
set -uo pipefail
budget=${1:-540}
shift || true
out=${OUT:-studies/results}
python - <<'PY' || exit 2
import importlib, jax
missing = [m for m in ("optax", "numpy", "scipy", "sympy", "mpmath", "mnist1d")
           if importlib.util.find_spec(m) is None]
print("jax", jax.__version__, jax.devices())
if missing:
    raise SystemExit(f"missing packages: {missing}")
PY
for cfg in gpu_mlp100_w1024 gpu_convnet50_c128; do
  timeout --signal=INT $((budget / 2)) python -m studies.run studies/gpu/$cfg.json --out "$out/$cfg" "$@"
  python -m studies.run studies/gpu/$cfg.json --out "$out/$cfg" --summarize "$@" >/dev/null
done
