#!/usr/bin/env bash
# Perplexity of SmolLM2-135M-Instruct (the default model) per quantization scheme: our CPU engine
# (calibrated by ModelOpt through trtllm-convert) next to ModelOpt's fake-quant model in torch with
# the same scheme and calibration (scripts/modelopt_fake_quant_ppl.py). Both float32, so the only
# difference is how the quantized model is executed. Usage: scripts/modelopt_eval.sh [WORK_DIR] [SCHEME...]
# (schemes: float fp8 int8_sq int4_awq int8_wo int4_wo fp8_kv_fp8, and any of them but float and
# fp8_kv_fp8 with _lm_head for --quantize-lm-head, e.g. int8_wo_lm_head; default the first seven).
set -euo pipefail
WORK=${1:-/tmp/trtllm_modelopt_eval}
shift || true
if (($#)); then SCHEMES=("$@"); else SCHEMES=(float fp8 int8_sq int4_awq fp8_kv_fp8 int8_wo int4_wo); fi
mkdir -p "$WORK"
HERE=$(cd "$(dirname "$0")" && pwd)
python -c "from trtllm_build.quantization.calib_data import builtin_eval_text; print(builtin_eval_text())" > "$WORK/topics.txt"
EVAL=(--text-file "$WORK/topics.txt" --window 256 --max-tokens 2048)
CALIB=(--calib-size 8 --calib-seq-len 256)
flags() {
  case $1 in
    float) ;;
    fp8_kv_fp8) echo --quant fp8 --kv-cache fp8 "${CALIB[@]}" ;;
    *_lm_head) echo $(flags "${1%_lm_head}") --quantize-lm-head ;;
    int8_wo|int4_wo) echo --quant "$1" ;;
    *) echo --quant "$1" "${CALIB[@]}" ;;
  esac
}
printf 'scheme\tengine\tmodelopt_fake_quant\n'
for name in "${SCHEMES[@]}"; do
  # shellcheck disable=SC2046
  trtllm-convert --model-dir default --output-dir "$WORK/ckpt_$name" --dtype float32 --calibrator modelopt \
    $(flags "$name") --log-level WARNING
  trtllm-build --checkpoint-dir "$WORK/ckpt_$name" --output-dir "$WORK/engine_$name" --target cpu \
    --max-batch-size 8 --max-num-tokens 2048 --max-seq-len 2048 --gather-context-logits > /dev/null
  engine=$(trtllm-eval perplexity --engine-dir "$WORK/engine_$name" "${EVAL[@]}")
  # shellcheck disable=SC2046
  reference=$(python "$HERE/modelopt_fake_quant_ppl.py" --model-dir default "${EVAL[@]}" $(flags "$name") 2> "$WORK/fake_quant_$name.log" | tail -1)
  printf '%s\t%s\t%s\n' "$name" "$engine" "$reference"
done
