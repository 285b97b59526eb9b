#!/usr/bin/env bash
# GPU check, run on a machine with a CUDA GPU: build the package with the CUDA backend, run the
# GPU test suite, benchmark a 1B-parameter Llama-shaped model (random weights) against Hugging
# Face transformers on the same GPU, print a short table last. Writes under $OUT (at most 8 files
# come back from a device call): gpu_check.json (summary), gpu_check.log (everything printed),
# pytest.log, and per phase smol_pytest.log, tp_pytest.log, tp_summary.json, profile.log,
# bench_weight_only.log, bench_decode_attention.log; the per-benchmark JSON (in /tmp/gpu_check_json) is folded into
# gpu_check.json.
#
#   scripts/gpu_check.sh [PHASES]   PHASES: comma-separated, of build, test, bench (the 1B model),
#                                   bench8b, ncu (each kernel's time on cold caches), tp, smol
#                                   (the SmolLM2 GPU tests alone), attn (the decode attention
#                                   alone at batch 1 and 64);
#                                   all = build,test,bench (the default). build, test, tp and smol
#                                   (re)run the incremental `pip install -e .`; bench and bench8b
#                                   build only where nothing was built yet.
#
# bench8b: the Llama-3.1-8B shape (random weights) in bf16 and, for each scheme in $QUANT8B
# (default "fp8 int8_wo int4_awq"; "" for none; fp8_kv8 is fp8 with an FP8 KV cache; a name ending
# in _lmh, e.g. int4_awq_lmh, adds --quantize-lm-head), quantized: batch-1 latency, TTFT at 2048,
# throughput, and HF transformers on the same GPU in the same run. Needs ~90 GB of disk in /tmp at
# the peak (every scheme is converted at once). Schemes in $SYNTH_8B (default "fp8 fp8_kv8 int4_awq") get
# synthetic scales instead of a calibration (scripts/make_synthetic_quant_checkpoint.py).
# MAX_BATCH_8B (default 256): the engines' max batch size (throughput at 1024 requests may want
# 1024); engines of another size go to /tmp/bench8b_mb<N>. BF16_8B=0 skips the bf16 engine and its benchmarks (a
# later call for the quantized ones), BF16_8B=ratio runs only the two the quantized ones are
# compared with (latency, throughput), THROUGHPUT_1K=0 skips the 256 x 1024/1024 throughput run,
# PROFILE_8B=1 adds the per-op-kind profile of the bf16 throughput run. ENV_AB_8B ("NAME=V NAME2=V;...")
# runs each engine's batch-1 latency again under each environment, side by side (A/B of a runtime
# switch such as TRTLLM_PDL=0), and the kernel microbenchmark under each (ENV_AB_BATCH_8B=1: the
# BATCH_8B runs under each too). BATCH_8B ("4 8") adds, per engine, N requests of 128 in / 256 out at
# once: decode at batch N. BUILD_AB_8B ("NAME=V ..."): each quantized scheme's checkpoint is built a
# second time under that environment (A/B of a build-time switch), its batch-1 latency run next to
# the first engine's (and under each of $ENV_AB_8B); BUILD_AB_SCHEMES_8B: only those schemes.
# tp (two or more GPUs): tensor parallelism, see tp_phase below (TP_DIR, TP_HF, TP_ENGINE1 reuse
# files of an earlier phase; TP_SKIP_TESTS=1 skips its pytest; TP_ENV_AB runs TP=1's and TP=2's batch-1
# decode again under each of its environments ("NAME=V;..."); TP_LATENCY_ONLY=1 runs only the
# batch-1 decode of TP=1 and TP=2: no all-reduce benchmark, greedy check, throughput, NCCL run or
# profile; TP_DTYPE=float32 runs it in float32, whose rounding flips random weights' near ties far
# less often than bf16's: the greedy check only, no benchmarks; TP_ENGINE1 must then be a float32
# engine too).
# GPU_TEST_TIMEOUT: seconds for the whole GPU suite (test phase; default 480); GPU_TESTS: the test
# files or dirs it runs (default tests).
#
# Offline machines: put wheels of what is missing (scikit-build-core, pybind11, pytest, gguf,
# ...) in .whl/ (or $WHEELS); they are installed into /tmp/site and put on PYTHONPATH. A machine
# without OpenBLAS (the CPU backend, the reference, needs it) gets it from the Debian packages
# libopenblas0-pthread, libopenblas-pthread-dev and libgfortran5 in $DEBS (default .debs/),
# unpacked into /tmp/openblas. A machine without MPI (tensor parallelism needs it) gets MPICH from
# its PyPI wheel in $MPI_WHEELS (default .gpu/mpi/), see setup_mpi.
set -uo pipefail
cd "$(dirname "$0")/.."
PHASE=${1:-all}
[[ $PHASE == all ]] && PHASE=build,test,bench
has() { [[ ",$PHASE," == *",$1,"* ]]; }
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
DEBS=${DEBS:-.debs}
JSON_DIR=/tmp/gpu_check_json
mkdir -p "$OUT" "$JSON_DIR"
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

# MPI for tensor parallelism: GPU images have none. MPICH's PyPI wheel (mpich-*.whl) holds
# mpiexec, mpi.h and libmpi; `pip --target` would drop its lib/, so it goes in with --prefix, and
# CMake finds it through MPI_HOME (the module gets an rpath to it).
setup_mpi() {
  # GPU images run as root with Open MPI, whose mpiexec refuses root unless told twice.
  ((EUID == 0)) && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  command -v mpiexec >/dev/null && return 0
  local wheels=("${MPI_WHEELS:-.gpu/mpi}"/mpich-*.whl)
  if [[ ! -e ${wheels[0]} ]]; then
    echo "no MPI and no mpich wheel in ${MPI_WHEELS:-.gpu/mpi}: built without tensor parallelism"
    return 0
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --prefix /tmp/mpich "${wheels[0]}" || return 1
  export PATH=/tmp/mpich/bin:$PATH
  cmake_args+=(-Ccmake.define.MPI_HOME=/tmp/mpich)
}
setup_mpi

nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader || true
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
nvcc --version | tail -1 || true

# SmolLM2's GGUF (94 MiB) is over one call's 64 MiB, so it travels in two halves
# (.gpu/smol_a/part_0_of_2, .gpu/smol_b/part_1_of_2) over two calls on the same warm machine;
# the GPU SmolLM2 tests run once both have arrived, and skip before.
mkdir -p /tmp/smolparts /tmp/smolcache
cp .gpu/smol_*/part_*_of_* /tmp/smolparts/ 2>/dev/null || true
if [[ -f /tmp/smolparts/part_0_of_2 && -f /tmp/smolparts/part_1_of_2 ]]; then
  cat /tmp/smolparts/part_0_of_2 /tmp/smolparts/part_1_of_2 > /tmp/smolcache/SmolLM2-135M-Instruct.Q4_1.gguf
  export TRTLLM_CACHE_DIR=/tmp/smolcache
fi

build_rc=0
tests_rc=-1
if has build || has test || has tp || has smol; then
  t0=$(date +%s)
  # No build isolation: GPU machines may have no package index; the build tools come from above.
  "$PYTHON" -m pip install -q --no-build-isolation --no-deps -e . "${cmake_args[@]}"
  build_rc=$?
  echo "build: rc $build_rc in $(($(date +%s) - t0)) s"
  if ((build_rc == 0)) && has test; then
    xdist=() per_test=()
    "$PYTHON" -c "import xdist" 2>/dev/null && xdist=(-n 4 --dist loadfile)
    # A hanging test must fail alone, not take the whole suite's time limit with it.
    "$PYTHON" -c "import pytest_timeout" 2>/dev/null && per_test=(--timeout 150)
    timeout ${GPU_TEST_TIMEOUT:-480} "$PYTHON" -m pytest -q -rfE -m gpu "${xdist[@]}" "${per_test[@]}" \
      -p no:cacheprovider ${GPU_TESTS:-tests} 2>&1 | tee "$OUT/pytest.log"
    tests_rc=${PIPESTATUS[0]}
  fi
fi
if has smol && ((build_rc == 0)); then  # the SmolLM2 GPU tests alone, once all its parts are here
  timeout 300 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/test_smollm2_cuda.py 2>&1 | tee "$OUT/smol_pytest.log"
  ((PIPESTATUS[0] == 0)) || tests_rc=1
fi

if ! has build && ! has test && ! has tp && ! has smol && ! "$PYTHON" -c "from trtllm_runtime import _core; assert _core.built_with_cuda" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-build-isolation --no-deps -e . "${cmake_args[@]}"  # a fresh machine
  build_rc=$?
fi
bench_rc=-1
if has bench && ((build_rc == 0)); then
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
      timeout 240 "$PYTHON" -m trtllm_runtime.cli.bench "$@" --engine-dir $B/engine --json "$JSON_DIR/bench_$name.json" \
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
    timeout 120 "$PYTHON" scripts/bench_prefill_attention.py --json "$JSON_DIR/bench_prefill_attention.json" \
      || echo "bench_prefill_attention failed: rc $?"
    timeout 300 "$PYTHON" scripts/bench_vs_hf.py --model $B/llama_1b --target cuda --dtype bfloat16 \
      --batch-sizes 1,16,64 --input-len 128 --output-len 128 --json "$JSON_DIR/bench_vs_hf.json" \
      || echo "bench_vs_hf failed: rc $?"
  )
  bench_rc=$?
fi

# --- the decode attention alone (phase attn) ----------------------------------------------------
# scripts/bench_decode_attention.py (8B shape, bf16, us per launch replayed in a CUDA graph): batch 1
# by context and split count, and batch 64 (one split per request and kv head: the throughput
# regime, where the keys stream at bandwidth), into $OUT/bench_decode_attention.log.
if has attn && ((build_rc == 0)); then
  {
    timeout 150 "$PYTHON" scripts/bench_decode_attention.py --contexts 0 32 128 256 384 1024 4095 \
      --splits 0 1 8 33 --iters 200 || echo "bench_decode_attention batch 1 failed: rc $?"
    timeout 150 "$PYTHON" scripts/bench_decode_attention.py --batch 64 --contexts 128 384 1024 --splits 0 1 \
      --iters 50 || echo "bench_decode_attention batch 64 failed: rc $?"
  } 2>&1 | tee "$OUT/bench_decode_attention.log"
fi

if has bench8b && ((build_rc == 0)); then
  # Engines of another MAX_BATCH_8B go to their own dir; the HF model is shared.
  HF8=/tmp/bench8b/llama_8b B=/tmp/bench8b
  [[ ${MAX_BATCH_8B:-256} == 256 ]] || B=/tmp/bench8b_mb$MAX_BATCH_8B
  mkdir -p $B /tmp/bench8b
  (
    set -e
    build_args=(--target cuda --max-batch-size ${MAX_BATCH_8B:-256} --max-num-tokens 8192 --max-seq-len 4096)
    schemes=(${QUANT8B-fp8 int8_wo int4_awq})
    [[ ${BF16_8B:-1} == 0 ]] || schemes=(bf16 "${schemes[@]}")
    failed8=0  # a failed benchmark is reported and the others run; the phase's rc says it failed
    bench8() {  # engine, name, args...: JSON in $JSON_DIR and its figures printed at once (a call
      # cut off by its time limit still returns the log)
      local engine=$1 name=$2; shift 2
      timeout 300 "$PYTHON" -m trtllm_runtime.cli.bench "$@" --engine-dir "$engine" \
        --json "$JSON_DIR/bench8b_$name.json" >/dev/null || { echo "bench8b $name failed: rc $?"; failed8=1; return 0; }
      "$PYTHON" -c "import json, sys; r = json.load(open(sys.argv[1])); print('bench8b $name:', {k: r[k] for k in \
('decode_tokens_per_s', 'ttft_ms', 'output_tokens_per_s', 'engine_bytes', 'kv_cache_bytes', 'per_step') if k in r})" \
        "$JSON_DIR/bench8b_$name.json"
    }
    convert8() {  # name, convert args...: checkpoint in $B/ckpt_<name>
      local name=$1; shift
      # Calibration (fp8, AWQ) runs the 8B model in torch on the CPU for minutes (AWQ's scale search
      # about an hour): the benchmark takes synthetic scales for the schemes in $SYNTH_8B (same
      # tensors; speed does not depend on their values).
      local convert=(-m trtllm_build.cli.convert)
      if [[ " ${SYNTH_8B-fp8 fp8_kv8 int4_awq} " == *" ${name%_lmh} "* ]]; then
        convert=(scripts/make_synthetic_quant_checkpoint.py)
      elif [[ $name == fp8* || $name == int8_sq ]]; then
        set -- "$@" --calib-size 4 --calib-seq-len 128
      fi
      "$PYTHON" "${convert[@]}" --model-dir $HF8 --output-dir $B/ckpt_$name "$@" > $B/convert_$name.log 2>&1 ||
        { tail -5 $B/convert_$name.log; return 1; }
    }
    convert_args() {  # name -> trtllm-convert arguments; a name ending in _lmh quantizes lm_head too
      local lmh=
      [[ $1 == *_lmh ]] && lmh=--quantize-lm-head
      case ${1%_lmh} in
        bf16) echo --dtype bfloat16 ;;
        fp8_kv8) echo --dtype bfloat16 --quant fp8 --kv-cache fp8 $lmh ;;
        *) echo --dtype bfloat16 --quant ${1%_lmh} $lmh ;;
      esac
    }
    IFS=';' read -ra ab_envs <<< "${ENV_AB_8B:-}"
    latency8() {  # engine, name: batch-1 decode, 128 in / 256 out; again under each of $ENV_AB_8B;
      # and for each N in $BATCH_8B (e.g. "4 8"), N such requests at once (decode at batch N)
      bench8 "$1" "$2" latency --input-len 128 --output-len 256 --iterations 2
      for n in ${BATCH_8B:-}; do
        bench8 "$1" "${2%latency}throughput_bs$n" throughput --input-len 128 --output-len 256 --num-requests $n
      done
      for i in "${!ab_envs[@]}"; do
        echo "bench8b ${2}_env$i: ${ab_envs[$i]}"
        (export ${ab_envs[$i]}; bench8 "$1" "${2}_env$i" latency --input-len 128 --output-len 256 --iterations 2)
        [[ ${ENV_AB_BATCH_8B:-0} == 1 ]] || continue
        for n in ${BATCH_8B:-}; do
          (export ${ab_envs[$i]}; bench8 "$1" "${2%latency}throughput_bs${n}_env$i" throughput --input-len 128 \
            --output-len 256 --num-requests $n)
        done
      done
    }
    t0=$(date +%s)
    [[ -d $HF8 ]] || "$PYTHON" scripts/make_random_llama.py --out $HF8 --preset 8b
    # Every scheme's conversion at once (CPU and disk), while the GPU runs the kernel microbenchmark;
    # on a disk with under 100 GB free (the single-GPU machines have 64 GB) one at a time, each
    # just before its build, so only one checkpoint exists at once.
    local_disk_gb=$(df -BG --output=avail /tmp | tail -1 | tr -dc 0-9)
    parallel_convert=1
    ((local_disk_gb >= 100)) || parallel_convert=0
    pids=()
    for q in "${schemes[@]}"; do
      ((parallel_convert)) || break
      [[ -d $B/engine_$q ]] || { convert8 $q $(convert_args $q) & pids+=($!); }
    done
    # The weight-only GEMV against the bf16 GEMM on the 8B layer shapes at m = 1 (us and GB/s), and
    # again under each of $ENV_AB_8B. LATENCY_ONLY_8B=1: batch-1 decode of each engine alone (no
    # microbenchmark, no throughput runs); WO_BENCH_8B=1 keeps the microbenchmark.
    quick=${LATENCY_ONLY_8B:-0}
    if ((!quick)) || [[ ${WO_BENCH_8B:-0} == 1 ]]; then
      timeout 120 "$PYTHON" scripts/bench_weight_only.py | tee "$OUT/bench_weight_only.log" || true
      for i in "${!ab_envs[@]}"; do
        echo "bench_weight_only env$i: ${ab_envs[$i]}" | tee -a "$OUT/bench_weight_only.log"
        (export ${ab_envs[$i]}; timeout 120 "$PYTHON" scripts/bench_weight_only.py) | tee -a "$OUT/bench_weight_only.log" || true
      done
    fi
    for pid in "${pids[@]}"; do wait $pid; done
    what="made the HF model"
    ((parallel_convert)) && what="made and converted ${schemes[*]}"
    echo "8B: $what in $(($(date +%s) - t0)) s (${local_disk_gb} GB free)"
    for q in "${schemes[@]}"; do  # builds one at a time: each times GEMM tactics on the GPU
      [[ -d $B/engine_$q ]] && continue
      # Printed at once: a call cut off by its time limit shows where its time went.
      t0=$(date +%s)
      ((parallel_convert)) || { convert8 $q $(convert_args $q) && echo "8B $q: convert $(($(date +%s) - t0)) s"; }
      t0=$(date +%s)
      "$PYTHON" -m trtllm_build.cli.build --checkpoint-dir $B/ckpt_$q --output-dir $B/engine_$q "${build_args[@]}" \
        2>&1 | grep -E "error" || true
      if [[ -n ${BUILD_AB_8B:-} && $q != bf16 && " ${BUILD_AB_SCHEMES_8B:-$q} " == *" $q "* ]]; then
        # the same checkpoint built again under $BUILD_AB_8B
        (export $BUILD_AB_8B; "$PYTHON" -m trtllm_build.cli.build --checkpoint-dir $B/ckpt_$q \
          --output-dir $B/engine_${q}_ab "${build_args[@]}" 2>&1 | grep -E "error") || true
      fi
      rm -rf $B/ckpt_$q
      echo "8B $q: build $(($(date +%s) - t0)) s, engine $(du -sh $B/engine_$q | cut -f1)"
    done
    if [[ ${BF16_8B:-1} != 0 ]]; then  # the bf16 figures the quantized ones are compared with
      latency8 $B/engine_bf16 latency
      ((quick)) || bench8 $B/engine_bf16 throughput throughput --input-len 128 --output-len 128 --num-requests 1024
      # PROFILE_8B=1: device time per op kind of that throughput run (graphs off, each op timed).
      if [[ ${PROFILE_8B:-0} == 1 ]]; then
        TRTLLM_PROFILE=1 timeout 200 "$PYTHON" -m trtllm_runtime.cli.bench throughput --engine-dir $B/engine_bf16 \
          --input-len 128 --output-len 128 --num-requests 1024 2>&1 >/dev/null | grep "trtllm profile" || true
      fi
    fi
    for q in ${QUANT8B-fp8 int8_wo int4_awq}; do
      latency8 $B/engine_$q ${q}_latency
      if [[ -n ${BUILD_AB_8B:-} && -d $B/engine_${q}_ab ]]; then  # and under each of $ENV_AB_8B too
        echo "bench8b ${q}_build_ab_latency: engine built under $BUILD_AB_8B"
        latency8 $B/engine_${q}_ab ${q}_build_ab_latency
        rm -rf $B/engine_${q}_ab
      fi
      [[ $q == fp8* ]] && ((!quick)) && bench8 $B/engine_$q ${q}_throughput throughput --input-len 128 --output-len 128 \
        --num-requests 1024
      rm -rf $B/engine_$q
    done
    if [[ ${BF16_8B:-1} == 1 ]]; then  # and the rest of the bf16 benchmarks
      bench8 $B/engine_bf16 ttft2048 latency --input-len 2048 --output-len 2 --iterations 3
      [[ ${THROUGHPUT_1K:-1} == 0 ]] ||
        bench8 $B/engine_bf16 throughput_1k throughput --input-len 1024 --output-len 1024 --num-requests 256
      # Where the time goes (graphs off, so launch gaps count): a 2048-token prefill, then decode.
      for lens in "2048 2" "128 64"; do
        set -- $lens
        TRTLLM_PROFILE=1 timeout 120 "$PYTHON" -m trtllm_runtime.cli.bench latency --engine-dir $B/engine_bf16 \
          --input-len $1 --output-len $2 --iterations 1 2>&1 >/dev/null | grep "trtllm profile" || true
      done
      timeout 400 "$PYTHON" scripts/bench_vs_hf.py --model $HF8 --engine-dir $B/engine_bf16 --target cuda \
        --dtype bfloat16 --batch-sizes 1,64 --input-len 128 --output-len 128 --json "$JSON_DIR/bench8b_vs_hf.json" \
        || { echo "bench_vs_hf 8B failed: rc $?"; failed8=1; }
    fi
    exit $failed8
  )
  rc=$?
  ((bench_rc <= 0)) && bench_rc=$rc
fi

# --- each kernel's device time on cold caches (phase ncu) -----------------------------------------
# Nsight Compute times every kernel alone, with the caches flushed before it (--cache-control all)
# and the clocks left alone: the decode GEMVs of scripts/bench_weight_only.py at TP=1 and TP=2
# shapes ($OUT/ncu_gemv_tp{1,2}.csv; the per-layer table of each, scripts/ncu_gemv_table.py, goes
# into the log), and every kernel of about two batch-1 decode steps of the
# Llama-3.1-8B shape in bf16 with graphs off ($OUT/ncu_decode_8b.csv; the bf16 engine of bench8b,
# built here if missing; its time per step by kind of kernel, scripts/ncu_decode_table.py, goes into
# the log). The time of a kernel alone, against its bytes at the copy bandwidth. NCU_SECTIONS=1 adds
# the stall profile of the tile GEMV (below).
if has ncu && ((build_rc == 0)); then
  ncu_bin=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  ncu_run() {  # csv name, ncu args and command...
    local csv=$1; shift
    timeout 240 "$ncu_bin" --clock-control none --cache-control all --csv \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum "$@" > "$OUT/$csv" \
      2> "$JSON_DIR/$csv.err" || { echo "ncu $csv: rc $?"; tail -5 "$JSON_DIR/$csv.err"; }
    echo "ncu $csv: $(grep -c gpu__time_duration "$OUT/$csv") kernels timed"
  }
  # NCU_GEMV_ENV: extra runs of the GEMVs, each under an environment ("NAME=V NAME2=V2;..."), for A/B.
  IFS=';' read -ra gemv_envs <<< "${NCU_GEMV_ENV:-}"
  for tp in 1 2; do
    [[ ${NCU_GEMV:-1} == 0 ]] && break  # NCU_GEMV=0: the decode profile alone
    ncu_run ncu_gemv_tp$tp.csv -k regex:gemv "$PYTHON" scripts/bench_weight_only.py --reps 1 --tp $tp
    for i in "${!gemv_envs[@]}"; do
      echo "ncu ncu_gemv_tp${tp}_env$i.csv: ${gemv_envs[$i]}"
      ncu_run ncu_gemv_tp${tp}_env$i.csv -k regex:gemv env ${gemv_envs[$i]} "$PYTHON" scripts/bench_weight_only.py \
        --reps 1 --tp $tp
    done
  done
  # Per-layer table of every GEMV run above (in the log, so an A/B call's result comes back even
  # when its CSVs do not).
  [[ ${NCU_GEMV:-1} == 0 ]] || "$PYTHON" scripts/ncu_gemv_table.py "$OUT"/ncu_gemv_tp*.csv || true
  # NCU_SECTIONS=1: why a GEMV takes its time. Launch, occupancy, scheduler, warp-state and source
  # sections (stall reasons per instruction) of the kernels matching $NCU_KERNEL (default
  # regex:tile_gemv) in scripts/bench_weight_only.py --reps 1 at TP=1, again under each
  # NCU_GEMV_ENV: $OUT/ncu_sections[_envN].txt, and per kernel one summary line in the log.
  if [[ ${NCU_SECTIONS:-0} == 1 ]]; then
    section_envs=("" "${gemv_envs[@]}")
    for i in "${!section_envs[@]}"; do
      f=$OUT/ncu_sections$( ((i == 0)) || echo "_env$((i - 1))").txt
      echo "ncu sections ${f##*/}: ${section_envs[$i]:-default}"
      env ${section_envs[$i]} timeout 240 "$ncu_bin" --clock-control none --cache-control all \
        -k "${NCU_KERNEL:-regex:tile_gemv}" --section SpeedOfLight --section LaunchStats --section Occupancy \
        --section SchedulerStats --section WarpStateStats --section SourceCounters "$PYTHON" scripts/bench_weight_only.py --reps 1 > "$f" 2>&1 ||
        echo "ncu sections: rc $?"
      awk 'function flush() { if (grid != "") print "  grid " grid ", " r " regs: " d " us, issue " iw "/cycle, " aw \
             " active warps/scheduler, " c " cycles/instruction" }
           /Context [0-9]+, Stream/ {flush(); match($0, /\([0-9]+, [0-9]+, [0-9]+\)x\([0-9]+/); grid = substr($0, RSTART, RLENGTH)}
           /^ +Duration / {d = $NF} /Issued Warp Per Scheduler/ {iw = $NF} /Active Warps Per Scheduler/ {aw = $NF}
           /Registers Per Thread/ {r = $NF} /Warp Cycles Per Issued Instruction/ {c = $NF}
           END {flush()}' "$f"
      grep -E "spends [0-9.]+ cycles being stalled" "$f" | sed 's/^ *//' | sort | uniq -c | sort -rn | head -4
    done
  fi
  B=/tmp/bench8b
  if [[ ${NCU_DECODE:-1} == 0 ]]; then
    :
  elif [[ ! -f $B/engine_bf16/config.json ]]; then
    mkdir -p $B
    [[ -d $B/llama_8b ]] || "$PYTHON" scripts/make_random_llama.py --out $B/llama_8b --preset 8b
    "$PYTHON" -m trtllm_build.cli.convert --model-dir $B/llama_8b --output-dir $B/ckpt_bf16 --dtype bfloat16 \
      --log-level WARNING && "$PYTHON" -m trtllm_build.cli.build --checkpoint-dir $B/ckpt_bf16 --output-dir \
      $B/engine_bf16 --target cuda --max-batch-size 256 --max-num-tokens 8192 --max-seq-len 4096 2>&1 | grep -E "error"
    rm -rf $B/ckpt_bf16
  fi
  # Warm-up (prefill + 3 decode steps) and the timed run's prefill and first decode steps skipped.
  [[ ${NCU_DECODE:-1} == 0 ]] || TRTLLM_CUDA_GRAPHS=0 ncu_run ncu_decode_8b.csv --launch-skip ${NCU_SKIP:-2600} --launch-count 700 \
    "$PYTHON" -m trtllm_runtime.cli.bench latency --engine-dir $B/engine_bf16 --input-len 128 --output-len 8 --iterations 1
  # Its time per step by kind of kernel (scripts/ncu_decode_table.py), into the log.
  [[ ${NCU_DECODE:-1} == 0 ]] || "$PYTHON" scripts/ncu_decode_table.py "$OUT/ncu_decode_8b.csv" || true
fi

# --- tensor parallelism (phase tp; two or more GPUs) ----------------------------------------------
# The TP GPU tests (tiny models of every family, TP=2 against TP=1 on the GPU), then the
# Llama-3.1-8B shape with random weights converted and built at TP=1 and TP=2: greedy tokens of
# TP=2 against TP=1 (scripts/tp_check.py), and trtllm-bench latency (bs1, 128 in / 256 out) and
# throughput (256 requests, 128/128) at both, with the scaling. Writes $OUT/tp_summary.json (details in $JSON_DIR); its
# summary lines are the last it prints. The 8B files go to $TP_DIR (default /tmp/bench_tp), about
# 64 GB at the peak (checkpoints and the HF dir are deleted once used); an HF dir or a TP=1 engine
# (same build flags) made by an earlier phase is reused when TP_HF / TP_ENGINE1 name it.
tp_phase() {
  local dir=${TP_DIR:-/tmp/bench_tp} t0 rc=0
  local hf=${TP_HF:-$dir/llama_8b} engine1=${TP_ENGINE1:-$dir/engine_tp1} engine2=$dir/engine_tp2
  export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}  # this workplace's rule for shared GPUs (KINDS.md)
  mkdir -p "$dir"
  echo "tp: $(nvidia-smi -L | wc -l) GPUs; $(mpiexec --version 2>&1 | grep -m1 -i version)"
  # Open MPI binds each of 2 ranks to one core by default; rank 0's host threads need more.
  local mpirun=(mpiexec)
  mpiexec --version 2>&1 | grep -qE "Open MPI|OpenRTE" && mpirun+=(--bind-to none)
  df -h "$dir" | tail -1
  local build_flags=(--target cuda --max-batch-size 256 --max-num-tokens 8192 --max-seq-len 4096)
  local dtype=${TP_DTYPE:-bfloat16}
  # MPI itself first: a launcher or network problem shows here, not as every TP test failing.
  timeout 60 "${mpirun[@]}" -n 2 "$PYTHON" -c "from trtllm_runtime import _core, parallel; c = parallel.world_comm(); \
print(f'tp: rank {c.rank}/{c.size}, local {c.local_rank}/{c.local_size}, nccl {_core.nccl_available}, \
{_core.mpi_library_version}')" || { echo "tp: mpiexec -n 2 failed; see above"; return 1; }
  # Making and converting the 8B (disk and CPU) overlaps the tests (GPUs, lightly).
  (
    set -e
    t0=$(date +%s)
    [[ -f $hf/config.json ]] || "$PYTHON" scripts/make_random_llama.py --out "$hf" --preset 8b
    echo "tp: 8B HF dir ready in $(($(date +%s) - t0)) s"
    t0=$(date +%s)
    local pids=()
    if [[ ! -f $engine1/config.json ]]; then
      "$PYTHON" -m trtllm_build.cli.convert --model-dir "$hf" --output-dir "$dir/ckpt_tp1" --dtype $dtype \
        --log-level WARNING &
      pids+=($!)
    fi
    "$PYTHON" -m trtllm_build.cli.convert --model-dir "$hf" --output-dir "$dir/ckpt_tp2" --dtype $dtype \
      --tp-size 2 --log-level WARNING
    for pid in "${pids[@]}"; do wait "$pid"; done
    echo "tp: converted TP=1 and TP=2 in $(($(date +%s) - t0)) s"
    [[ -n ${TP_HF:-} ]] || rm -rf "$hf"  # ours: 16 GB less on disk for the engines
  ) > "$JSON_DIR/tp_prepare.log" 2>&1 &
  local prepare=$!
  t0=$(date +%s)
  [[ ${TP_SKIP_TESTS:-0} == 1 ]] || timeout 300 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/test_tp_mpi.py \
    tests/test_cuda_kernels.py::test_concat_shards_matches_cpu \
    tests/test_cuda_kernels.py::test_float32_staging_of_16bit_all_reduce_is_exact_then_rounds_to_nearest_even \
    2>&1 | tee "$OUT/tp_pytest.log"
  ((PIPESTATUS[0] == 0)) || rc=1
  echo "tp: tests in $(($(date +%s) - t0)) s"
  # TP_DTYPE=float32 is the exactness check alone: greedy tokens, no benchmarks (the float32 8B
  # takes most of a call to convert and build).
  local benchmarks=1 quick=${TP_LATENCY_ONLY:-0}
  [[ $dtype == float32 ]] && benchmarks=0
  ((benchmarks == 0 || quick)) || timeout 120 "${mpirun[@]}" -n 2 "$PYTHON" scripts/bench_all_reduce.py \
    --json "$JSON_DIR/tp_all_reduce.json" || rc=1
  wait $prepare || { echo "tp: making / converting the 8B failed:"; tail -20 "$JSON_DIR/tp_prepare.log"; return 1; }
  cat "$JSON_DIR/tp_prepare.log"

  # One GPU each, so the two builds' GEMM tactic timings do not disturb each other. In float32
  # (32 GB a checkpoint, 32 GB an engine pair) both builds at once would need both checkpoints
  # and both engines on disk (128 GB): there the TP=1 build finishes and its checkpoint goes first.
  t0=$(date +%s)
  local build1=
  if [[ ! -f $engine1/config.json ]]; then
    CUDA_VISIBLE_DEVICES=0 "$PYTHON" -m trtllm_build.cli.build --checkpoint-dir "$dir/ckpt_tp1" \
      --output-dir "$engine1" "${build_flags[@]}" > "$JSON_DIR/tp_build1.log" 2>&1 &
    build1=$!
    if [[ $dtype == float32 ]]; then
      wait "$build1" || { tail "$JSON_DIR/tp_build1.log"; return 1; }
      build1= && rm -rf "$dir/ckpt_tp1"
    fi
  fi
  CUDA_VISIBLE_DEVICES=1 "$PYTHON" -m trtllm_build.cli.build --checkpoint-dir "$dir/ckpt_tp2" \
    --output-dir "$engine2" "${build_flags[@]}" > "$JSON_DIR/tp_build2.log" 2>&1 || { tail "$JSON_DIR/tp_build2.log"; return 1; }
  [[ -z $build1 ]] || wait "$build1" || { tail "$JSON_DIR/tp_build1.log"; return 1; }
  rm -rf "$dir/ckpt_tp1" "$dir/ckpt_tp2"
  echo "tp: built TP=1 and TP=2 engines in $(($(date +%s) - t0)) s"

  ((quick)) || timeout 240 "$PYTHON" scripts/tp_check.py --reference "$engine1" --candidate "$engine2" --new-tokens 32 \
    --num-prompts 4 --json "$JSON_DIR/tp_greedy.json" || rc=1

  # TP=2 twice: small all-reduces through peer memory (the default), and all through NCCL
  # (TRTLLM_CUSTOM_ALL_REDUCE=0), side by side.
  local run engine launch
  local runs=(tp1 tp2 tp2_nccl)
  ((quick)) && runs=(tp1 tp2)
  ((benchmarks)) && for run in "${runs[@]}"; do
    engine=$engine2 launch=("${mpirun[@]}" -n 2)
    [[ $run == tp1 ]] && engine=$engine1 launch=()
    [[ $run == tp2_nccl ]] && launch=(env TRTLLM_CUSTOM_ALL_REDUCE=0 "${mpirun[@]}" -n 2)
    timeout 180 "${launch[@]}" "$PYTHON" -m trtllm_runtime.cli.bench latency --engine-dir "$engine" --input-len 128 \
      --output-len 256 --iterations 2 --json "$JSON_DIR/tp_latency_$run.json" >/dev/null || { echo "tp: latency $run failed"; rc=1; }
    ((quick)) || timeout 240 "${launch[@]}" "$PYTHON" -m trtllm_runtime.cli.bench throughput --engine-dir "$engine" --input-len 128 \
      --output-len 128 --num-requests 256 --json "$JSON_DIR/tp_throughput_$run.json" >/dev/null || { echo "tp: throughput $run failed"; rc=1; }
    # Printed at once: a call cut off by its time limit still returns the log.
    "$PYTHON" -c "import json, os, sys; l, t = (json.load(open(f)) if os.path.exists(f) else None for f in sys.argv[1:]); \
print('tp $run:', round(l['decode_tokens_per_s'], 1), 'tok/s bs1,', round(l['ttft_ms'], 1), 'ms TTFT' + \
(f\", {round(t['output_tokens_per_s'])} tok/s at 256 req\" if t else ''))" "$JSON_DIR/tp_latency_$run.json" \
      "$JSON_DIR/tp_throughput_$run.json" 2>/dev/null || true
  done
  # TP_ENV_AB ("NAME=V NAME2=V;..."): TP=1 and TP=2 batch-1 decode again under each environment, then
  # once more as is, side by side (A/B of a runtime switch), with the scaling under each.
  local ab_env i=0
  IFS=';' read -ra tp_ab_envs <<< "${TP_ENV_AB:-}"
  ((benchmarks && ${#tp_ab_envs[@]} > 0)) && for ab_env in "${tp_ab_envs[@]}" ""; do
    timeout 180 env $ab_env "$PYTHON" -m trtllm_runtime.cli.bench latency --engine-dir "$engine1" \
      --input-len 128 --output-len 256 --iterations 2 --json "$JSON_DIR/tp_latency_tp1_env$i.json" >/dev/null ||
      { echo "tp: latency tp1 env$i failed"; rc=1; }
    timeout 180 env $ab_env "${mpirun[@]}" -n 2 "$PYTHON" -m trtllm_runtime.cli.bench latency --engine-dir "$engine2" \
      --input-len 128 --output-len 256 --iterations 2 --json "$JSON_DIR/tp_latency_tp2_env$i.json" >/dev/null ||
      { echo "tp: latency tp2 env$i failed"; rc=1; }
    "$PYTHON" -c "import json, sys; a, b = (json.load(open(f))['decode_tokens_per_s'] for f in sys.argv[1:]); \
print('tp env$i ($ab_env): TP=1', round(a, 1), 'TP=2', round(b, 1), 'tok/s bs1, scaling', round(b / a, 3))" \
      "$JSON_DIR/tp_latency_tp1_env$i.json" "$JSON_DIR/tp_latency_tp2_env$i.json" 2>/dev/null || true
    i=$((i + 1))
  done
  # Device time per op kind on each rank (graphs off, each op timed: all_reduce included).
  ((benchmarks == 0 || quick)) || TRTLLM_PROFILE=1 timeout 120 "${mpirun[@]}" -n 2 "$PYTHON" -m trtllm_runtime.cli.bench latency \
    --engine-dir "$engine2" --input-len 128 --output-len 64 --iterations 1 2>&1 >/dev/null | grep -v "^$" | tail -40
  "$PYTHON" - "$JSON_DIR" "$OUT" <<'PY' || rc=1
import json, pathlib, sys

out = pathlib.Path(sys.argv[1])
load = lambda name: json.loads((out / name).read_text()) if (out / name).exists() else None
summary = {"greedy": load("tp_greedy.json"), "all_reduce": load("tp_all_reduce.json")}
for mode, key in (("latency", "decode_tokens_per_s"), ("throughput", "output_tokens_per_s")):
    r1, r2, r2n = (load(f"tp_{mode}_{run}.json") for run in ("tp1", "tp2", "tp2_nccl"))
    summary[mode] = {"tp1": r1, "tp2": r2, "tp2_nccl": r2n, "scaling": r2[key] / r1[key] if r1 and r2 else None,
                     "scaling_nccl": r2n[key] / r1[key] if r1 and r2n else None}
(pathlib.Path(sys.argv[2]) / "tp_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
g, lat, thr = summary["greedy"], summary["latency"], summary["throughput"]
print(f"tp 8B greedy TP=2 vs TP=1: {g['identical']}/{g['prompts']} prompts identical for {g['new_tokens']} tokens, "
      f"{g['clear_divergences']} clear divergences" if g else "tp 8B greedy: no result")
nccl = lambda r, key, fmt: f"; TP=2 all on NCCL {r['tp2_nccl'][key]:{fmt}} ({r['scaling_nccl']:.2f}x)" if r["scaling_nccl"] else ""
if lat["scaling"]:
    print(f"tp 8B bs1 decode tok/s: TP=1 {lat['tp1']['decode_tokens_per_s']:.1f}, TP=2 {lat['tp2']['decode_tokens_per_s']:.1f}, "
          f"scaling {lat['scaling']:.2f}x (target >= 1.6x){nccl(lat, 'decode_tokens_per_s', '.1f')}; "
          f"TTFT ms {lat['tp1']['ttft_ms']:.1f} / {lat['tp2']['ttft_ms']:.1f}")
if thr["scaling"]:
    print(f"tp 8B 256 req 128/128 out tok/s: TP=1 {thr['tp1']['output_tokens_per_s']:.0f}, "
          f"TP=2 {thr['tp2']['output_tokens_per_s']:.0f}, scaling {thr['scaling']:.2f}x{nccl(thr, 'output_tokens_per_s', '.0f')}")
PY
  return $rc
}
tp_rc=-1
if has tp && ((build_rc == 0)); then
  t0=$(date +%s)
  tp_phase
  tp_rc=$?
  echo "tp phase: rc $tp_rc in $(($(date +%s) - t0)) s"
fi

JSON_DIR=$JSON_DIR BUILD_RC=$build_rc TESTS_RC=$tests_rc BENCH_RC=$bench_rc TP_RC=$tp_rc WALL_S=$(($(date +%s) - start)) GPU_NAME="$gpu_name" \
  "$PYTHON" - "$OUT" <<'PY'
import json, os, pathlib, sys

out = pathlib.Path(sys.argv[1])
summary = {k.lower(): int(os.environ[k]) for k in ("BUILD_RC", "TESTS_RC", "BENCH_RC", "TP_RC", "WALL_S")}
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
bench = {p.stem[len("bench_"):]: json.loads(p.read_text()) for p in sorted(pathlib.Path(os.environ["JSON_DIR"]).glob("bench_*.json"))}
bench8 = {p.stem[len("bench8b_"):]: json.loads(p.read_text()) for p in sorted(pathlib.Path(os.environ["JSON_DIR"]).glob("bench8b_*.json"))}
summary["bench8b"] = bench8
summary["bench"] = bench
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")

# 1B Llama shape, bf16: decode at batch 1 reads every weight but the embedding table once per token.
weight_bytes = 2 * (32000 * 2048 + 16 * (2048 * 3072 + 2048 * 2048 + 2 * 2048 * 8192 + 8192 * 2048 + 2 * 2048))
# Measured device-to-device copy bandwidth (H100: the issue's figure; H200: docs/cuda_backend.md).
bw = 4.3e12 if "H200" in summary["gpu"] else 2.96e12
rows = [("gpu", summary["gpu"]), ("build / tests / bench / tp rc", f"{summary['build_rc']} / {summary['tests_rc']} / {summary['bench_rc']} / {summary['tp_rc']}"),
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
# 8B Llama shape: weights read per decode token (all but the embedding table), bf16.
w8 = 2 * (128256 * 4096 + 32 * (4096 * 6144 + 4096 * 4096 + 3 * 4096 * 14336 + 2 * 4096) + 4096)
bf16_decode = bench8.get("latency", {}).get("decode_tokens_per_s")
for name, b in bench8.items():
    if name.endswith("latency"):
        scheme = name[: -len("_latency")] or "bf16"
        extra = f" (roofline {bw / w8:.0f})" if scheme == "bf16" else (f" ({b['decode_tokens_per_s'] / bf16_decode:.2f}x bf16)" if bf16_decode else "")
        size = f", engine {b['engine_bytes'] / 1e9:.1f} GB" if "engine_bytes" in b else ""
        rows.append((f"8B {scheme or 'bf16'} bs1 128/256 decode tok/s", f"{b['decode_tokens_per_s']:.1f}{extra}, TTFT {b['ttft_ms']:.1f} ms{size}"))
    elif "throughput" in name:  # throughput, throughput_1k, <scheme>_throughput
        scheme = name.split("throughput")[0].rstrip("_") or "bf16"
        rows.append((f"8B {scheme} {b['num_requests']} req {b['input_len']}/{b['output_len']} tok/s", f"{b['output_tokens_per_s']:.0f}"))
    elif name == "ttft2048":
        rows.append(("8B bf16 bs1 2048in TTFT ms", f"{b['ttft_ms']:.1f}"))
for r in bench8.get("vs_hf", {}).get("results", []):
    rows.append((f"8B vs HF bs{r['batch_size']} 128/128 tok/s", f"ours {r['ours_tokens_per_s']:.0f}, HF {r['hf_tokens_per_s']:.1f}, {r['ratio']:.1f}x"))
print("\n" + "\n".join(f"{k:<40} {v}" for k, v in rows))
PY

((build_rc == 0 && tests_rc <= 0 && bench_rc <= 0 && tp_rc <= 0))
