#!/usr/bin/env bash
# GPU check, run on a machine with a CUDA GPU: build the package with the CUDA backend, run the
# GPU test suite, benchmark a 1B-parameter Llama-shaped model (random weights) against Hugging
# Face transformers on the same GPU, print a short table last. Writes under $OUT:
# gpu_check.json (summary), gpu_check.log (everything printed), pytest.log, bench_*.json.
#
#   scripts/gpu_check.sh [all|build|test|bench]   (default all; bench reuses an earlier build)
#
# Offline machines: put wheels of what is missing (scikit-build-core, pybind11, pytest, gguf,
# ...) in .whl/ (or $WHEELS); they are installed into /tmp/site and put on PYTHONPATH. A machine
# without OpenBLAS (the CPU backend, the reference, needs it) gets it from the Debian packages
# libopenblas0-pthread, libopenblas-pthread-dev and libgfortran5 in $DEBS (default .debs/),
# unpacked into /tmp/openblas.
set -uo pipefail
cd "$(dirname "$0")/.."
PHASE=${1:-all}
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
DEBS=${DEBS:-.debs}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
start=$(date +%s)
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
cmake_args=(-Ccmake.define.TRTLLM_CUDA=ON)
if ! ldconfig -p | grep -q libopenblas && compgen -G "$DEBS/*.deb" >/dev/null; then
  for f in "$DEBS"/*.deb; do dpkg -x "$f" /tmp/openblas; done
  lib=/tmp/openblas/usr/lib/x86_64-linux-gnu
  cmake_args+=(-Ccmake.define.TRTLLM_OPENBLAS_LIBRARY=$lib/openblas-pthread/libopenblas.so
               -Ccmake.define.TRTLLM_CBLAS_INCLUDE_DIR=/tmp/openblas/usr/include/x86_64-linux-gnu/openblas-pthread)
  export LD_LIBRARY_PATH=$lib:$lib/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-8}

nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader || true
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
nvcc --version | tail -1 || true

build_rc=0
tests_rc=-1
if [[ $PHASE != bench ]]; then
  t0=$(date +%s)
  # No build isolation: GPU machines may have no package index; the build tools come from above.
  "$PYTHON" -m pip install -q --no-build-isolation --no-deps -e . "${cmake_args[@]}"
  build_rc=$?
  echo "build: rc $build_rc in $(($(date +%s) - t0)) s"
  if ((build_rc == 0)) && [[ $PHASE != build ]]; then
    xdist=()
    "$PYTHON" -c "import xdist" 2>/dev/null && xdist=(-n 4 --dist loadfile)
    timeout 300 "$PYTHON" -m pytest -q -m gpu "${xdist[@]}" -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest.log"
    tests_rc=${PIPESTATUS[0]}
  fi
fi

if [[ $PHASE == bench ]] && ! "$PYTHON" -c "from trtllm_runtime import _core; assert _core.built_with_cuda" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-build-isolation --no-deps -e . "${cmake_args[@]}"  # a fresh machine
  build_rc=$?
fi
bench_rc=-1
if [[ $PHASE == all || $PHASE == bench ]] && ((build_rc == 0)); then
  B=/tmp/bench
  mkdir -p $B
  (
    set -e
    [[ -d $B/llama_1b ]] || "$PYTHON" scripts/make_random_llama.py --out $B/llama_1b --preset 1b
    [[ -d $B/ckpt ]] || "$PYTHON" -m trtllm_build.cli.convert --model-dir $B/llama_1b --output-dir $B/ckpt \
      --dtype bfloat16 >/dev/null
    t0=$(date +%s)
    "$PYTHON" -m trtllm_build.cli.build --checkpoint-dir $B/ckpt --output-dir $B/engine --target cuda \
      --max-batch-size 256 --max-num-tokens 8192 --max-seq-len 4096 2>&1 | grep -E "tactics|GEMM|error" || true
    echo "trtllm-build (with GEMM tactic selection): $(($(date +%s) - t0)) s"
    run_bench() {  # name, args...
      local name=$1; shift
      timeout 240 "$PYTHON" -m trtllm_runtime.cli.bench "$@" --engine-dir $B/engine --json "$OUT/bench_$name.json" \
        >/dev/null || echo "bench $name failed: rc $?"
    }
    run_bench latency latency --input-len 128 --output-len 256 --iterations 3
    run_bench ttft2048 latency --input-len 2048 --output-len 2 --iterations 3
    run_bench throughput throughput --input-len 128 --output-len 128 --num-requests 512
    # Where the device time goes (graphs off, so launch gaps are included): per op kind.
    TRTLLM_PROFILE=1 timeout 120 "$PYTHON" -m trtllm_runtime.cli.bench latency --engine-dir $B/engine --input-len 128 \
      --output-len 64 --iterations 1 2>&1 >/dev/null | grep "trtllm profile" | tee -a "$OUT/profile.log" || true
    TRTLLM_PROFILE=1 timeout 120 "$PYTHON" -m trtllm_runtime.cli.bench throughput --engine-dir $B/engine --input-len 128 \
      --output-len 32 --num-requests 256 2>&1 >/dev/null | grep "trtllm profile" | tee -a "$OUT/profile.log" || true
    timeout 120 "$PYTHON" scripts/bench_prefill_attention.py --json "$OUT/bench_prefill_attention.json" \
      || echo "bench_prefill_attention failed: rc $?"
    timeout 300 "$PYTHON" scripts/bench_vs_hf.py --model $B/llama_1b --target cuda --dtype bfloat16 \
      --batch-sizes 1,16,64 --input-len 128 --output-len 128 --json "$OUT/bench_vs_hf.json" \
      || echo "bench_vs_hf failed: rc $?"
  )
  bench_rc=$?
fi

BUILD_RC=$build_rc TESTS_RC=$tests_rc BENCH_RC=$bench_rc WALL_S=$(($(date +%s) - start)) GPU_NAME="$gpu_name" \
  "$PYTHON" - "$OUT" <<'PY'
import json, os, pathlib, sys

out = pathlib.Path(sys.argv[1])
summary = {k.lower(): int(os.environ[k]) for k in ("BUILD_RC", "TESTS_RC", "BENCH_RC", "WALL_S")}
summary["gpu"] = os.environ.get("GPU_NAME", "")
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
bench = {p.stem[len("bench_"):]: json.loads(p.read_text()) for p in sorted(out.glob("bench_*.json"))}
summary["bench"] = bench
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")

# 1B Llama shape, bf16: decode at batch 1 reads every weight but the embedding table once per token.
weight_bytes = 2 * (32000 * 2048 + 16 * (2048 * 3072 + 2048 * 2048 + 2 * 2048 * 8192 + 8192 * 2048 + 2 * 2048))
bw = 4.8e12 if "H200" in summary["gpu"] else 3.35e12
rows = [("gpu", summary["gpu"]), ("build / tests / bench rc", f"{summary['build_rc']} / {summary['tests_rc']} / {summary['bench_rc']}"),
        ("pytest", summary.get("pytest_summary", "-"))]
if "latency" in bench:
    b = bench["latency"]
    rows.append(("1B bs1 128in/256out decode tok/s", f"{b['decode_tokens_per_s']:.0f} (roofline {bw / weight_bytes:.0f} at "
                 f"{bw / 1e12:.2f} TB/s, {100 * b['decode_tokens_per_s'] * weight_bytes / bw:.0f}%)"))
    rows.append(("1B bs1 128in TTFT ms", f"{b['ttft_ms']:.1f}"))
if "ttft2048" in bench:
    rows.append(("1B bs1 2048in TTFT ms", f"{bench['ttft2048']['ttft_ms']:.1f}"))
if "throughput" in bench:
    b = bench["throughput"]
    rows.append(("1B 512 req 128/128 out tok/s", f"{b['output_tokens_per_s']:.0f} (ITL p50 {b['inter_token_ms']['p50']:.1f} ms)"))
for r in bench.get("prefill_attention", []):
    if r["tokens"] == 2048:
        rows.append((f"{r['shape']} 2048-token prefill attention ms", f"{r['all_layers_ms']:.1f} all layers "
                     f"({r['layer_ms']:.3f} per layer, {r['tflops']:.0f} TFLOP/s)"))
for r in bench.get("vs_hf", {}).get("results", []):
    rows.append((f"1B vs HF bs{r['batch_size']} 128/128 tok/s", f"ours {r['ours_tokens_per_s']:.0f}, HF "
                 f"{r['hf_tokens_per_s']:.0f}, {r['ratio']:.1f}x"))
print("\n" + "\n".join(f"{k:<36} {v}" for k, v in rows))
PY

((build_rc == 0 && tests_rc <= 0 && bench_rc <= 0))
