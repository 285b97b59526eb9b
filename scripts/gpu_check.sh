#!/usr/bin/env bash
# GPU check, run on a machine with a CUDA GPU: build the package with the CUDA backend, run the
# GPU test suite, report the device. Writes $OUT/gpu_check.json (summary) and
# $OUT/gpu_check.log (everything printed). Exits non-zero if the build or a test failed.
#
# Offline machines: put wheels of what is missing (scikit-build-core, pybind11, pytest, gguf,
# ...) in .whl/; they are installed into /tmp/site and put on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
start=$(date +%s)

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
nvcc --version | tail -1 || true

# No build isolation: GPU machines may have no package index; the build tools come from above.
"$PYTHON" -m pip install --no-build-isolation --no-deps -e . -Ccmake.define.TRTLLM_CUDA=ON
build_rc=$?

tests_rc=-1
if ((build_rc == 0)); then
  "$PYTHON" -m pytest -q -m gpu tests 2>&1 | tee "$OUT/pytest.log"
  tests_rc=${PIPESTATUS[0]}
fi

BUILD_RC=$build_rc TESTS_RC=$tests_rc WALL_S=$(($(date +%s) - start)) "$PYTHON" - "$OUT" <<'PY'
import json, os, pathlib, sys

out = pathlib.Path(sys.argv[1])
summary = {
    "build_rc": int(os.environ["BUILD_RC"]),
    "tests_rc": int(os.environ["TESTS_RC"]),
    "wall_s": int(os.environ["WALL_S"]),
}
try:
    from trtllm_runtime import _core

    summary["built_with_cuda"] = _core.built_with_cuda
    summary["cuda_available"] = _core.cuda_available()
    summary["sm_arch"] = _core.cuda_device_sm_arch() if _core.cuda_available() else None
except Exception as e:  # report, don't hide: the summary is the point of this script
    summary["core_error"] = f"{type(e).__name__}: {e}"
log = out / "pytest.log"
if log.exists() and log.read_text().strip():
    summary["pytest_summary"] = log.read_text().strip().splitlines()[-1]
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
print("cuda_device_sm_arch():", summary.get("sm_arch"))
print(json.dumps(summary))
PY

((build_rc == 0 && tests_rc == 0))
