"""trtllm-convert: Hugging Face checkpoint or GGUF file -> checkpoint dir for trtllm-build."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..config import DTYPES, ConfigError
from ..convert import ConvertError, convert
from ..default_model import DefaultModelError
from ..quantization.options import CALIBRATORS, QuantOptions
from ..quantization.schemes import CLI_SCHEMES

PROG = "trtllm-convert"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Convert a Hugging Face model (Llama 2/3/3.1, Mistral, Qwen2, Qwen3, GPT-2) or a "
                    "llama.cpp GGUF file (llama, qwen2, qwen3; any quantization, dequantized) into a "
                    "checkpoint dir: config.json, rank{N}.safetensors per tensor-parallel rank, and "
                    "the tokenizer files. trtllm-build reads that dir.",
        epilog="example: trtllm-convert --model-dir hf_llama/ --output-dir ckpt/ --dtype bfloat16 --tp-size 2")
    parser.add_argument("--model-dir", required=True,
                        help="Hugging Face model directory (config.json + *.safetensors or "
                             "pytorch_model*.bin), a .gguf file, or 'default' for SmolLM2-135M-Instruct "
                             "(Q4_1 GGUF, downloaded once into $TRTLLM_CACHE_DIR or ~/.cache/trtllm; "
                             "write ./default for a directory of that name)")
    parser.add_argument("--output-dir", required=True,
                        help="checkpoint dir to write; written to a temporary dir first and renamed, "
                             "so it appears complete or not at all; an existing checkpoint dir is replaced")
    parser.add_argument("--dtype", default="auto", choices=("auto",) + DTYPES,
                        help="weight dtype; 'auto' (default) takes the model config's dtype, "
                             "bfloat16 if it names none (GGUF)")
    parser.add_argument("--tp-size", type=_positive_int, default=1,
                        help="tensor-parallel ranks; must divide the attention heads, the KV heads "
                             "and the MLP size (default 1)")
    q = parser.add_argument_group(
        "quantization", "The embeddings stay unquantized, and lm_head unless --quantize-lm-head. Calibration (fp8, int8_sq, int4_awq, "
        "--kv-cache fp8) runs the model in torch, with NVIDIA ModelOpt (pip install 'trtllm[modelopt]') or the "
        "built-in calibrator (pip install 'trtllm[quant]'). A checkpoint already quantized by ModelOpt "
        "(hf_quant_config.json, or its TensorRT-LLM export) is read as is, without these flags.")
    q.add_argument("--quant", choices=tuple(CLI_SCHEMES),
                   help="fp8: FP8 E4M3 weights and activations, per-tensor scales; int8_sq: INT8 SmoothQuant "
                        "(per-channel weights, per-tensor activations); int8_wo / int4_wo: weight-only, per "
                        "channel; int4_awq: weight-only INT4 with AWQ scales, per group")
    q.add_argument("--kv-cache", choices=("fp8",), help="FP8 E4M3 KV cache with a per-layer scale")
    q.add_argument("--calib-data", type=Path,
                   help="calibration text: .jsonl with a \"text\" per line, or a plain text file "
                        "(default: the standard library's pydoc topics, built in)")
    q.add_argument("--calib-size", type=_positive_int, default=16, help="calibration sequences (default 16)")
    q.add_argument("--calib-seq-len", type=_positive_int, default=256, help="tokens per sequence (default 256)")
    q.add_argument("--group-size", type=_positive_int,
                   help="int4_awq: inputs per weight scale (default 128; 64 or 32 when 128 does not divide "
                        "the layers' inputs, with a warning)")
    q.add_argument("--calibrator", choices=CALIBRATORS, default="auto",
                   help="modelopt: NVIDIA ModelOpt's mtq.quantize (its FP8, INT8 SmoothQuant and INT4 AWQ-lite "
                        "configs; llama family); builtin: our forward hooks (max, SmoothQuant, AWQ-lite); auto "
                        "(default): modelopt where it is installed, else builtin with a notice")
    q.add_argument("--quantize-lm-head", action="store_true",
                   help="quantize lm_head with the --quant scheme too (smaller and faster; its error lands on "
                        "every logit). Its rows are padded to a multiple of 64 per rank")
    q.add_argument("--smoothquant-alpha", type=float, default=0.5,
                   help="int8_sq: migration strength alpha in [0, 1] (default 0.5)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="DEBUG lists every tensor (default INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format=f"[{PROG}] %(levelname)s %(message)s")
    logging.getLogger("trtllm_build").setLevel(args.log_level)
    try:
        quant = QuantOptions(scheme=args.quant, kv_cache=args.kv_cache, calib_data=args.calib_data,
                             calib_size=args.calib_size, calib_seq_len=args.calib_seq_len,
                             group_size=args.group_size, smoothquant_alpha=args.smoothquant_alpha,
                             calibrator=args.calibrator, quantize_lm_head=args.quantize_lm_head)
        quant.validate()
        convert(args.model_dir, args.output_dir, args.dtype, args.tp_size, quant)
    except (ConvertError, ConfigError, DefaultModelError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
