#!/usr/bin/env bash
# Perplexity of SmolLM2-135M-Instruct (the default model) per quantization scheme on the CPU
# backend, against the bf16 engine: the README's quantization table. Usage: scripts/quant_eval.sh [WORK_DIR]
set -euo pipefail
WORK=${1:-/tmp/trtllm_quant_eval}
mkdir -p "$WORK"
python -c "from trtllm_build.quantization.calib_data import builtin_eval_text; print(builtin_eval_text())" > "$WORK/topics.txt"
CALIB=(--calib-size 8 --calib-seq-len 256)
run() {  # name, convert flags...
  local name=$1; shift
  trtllm-convert --model-dir default --output-dir "$WORK/ckpt_$name" --dtype bfloat16 "$@" --log-level WARNING
  trtllm-build --checkpoint-dir "$WORK/ckpt_$name" --output-dir "$WORK/engine_$name" --target cpu \
    --max-batch-size 8 --max-num-tokens 2048 --max-seq-len 2048 --gather-context-logits > /dev/null
  printf '%s\t%s\n' "$name" "$(trtllm-eval perplexity --engine-dir "$WORK/engine_$name" --text-file "$WORK/topics.txt" --window 256 --max-tokens 2048)"
}
run bf16
run fp8 --quant fp8 "${CALIB[@]}"
run int8_sq --quant int8_sq "${CALIB[@]}"
run int8_wo --quant int8_wo
run int4_wo --quant int4_wo
run int4_awq --quant int4_awq "${CALIB[@]}"
run bf16_kv_fp8 --kv-cache fp8 "${CALIB[@]}"
run fp8_kv_fp8 --quant fp8 --kv-cache fp8 "${CALIB[@]}"
run fp8_lm_head --quant fp8 --quantize-lm-head "${CALIB[@]}"
run int8_wo_lm_head --quant int8_wo --quantize-lm-head
run int4_awq_lm_head --quant int4_awq --quantize-lm-head "${CALIB[@]}"
