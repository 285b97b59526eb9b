"""What `trtllm-convert --quant ...` asks for, resolved against the model into a QuantConfig."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, ModelConfig, QuantConfig
from .schemes import CLI_SCHEMES, scheme_of

log = logging.getLogger(__name__)

DEFAULT_AWQ_GROUP_SIZE = 128
FALLBACK_GROUP_SIZES = (64, 32)
# "modelopt": NVIDIA ModelOpt's mtq.quantize (modelopt_calibrate.py); "builtin": our forward hooks
# (calibrate.py); "auto": ModelOpt when it is installed.
CALIBRATORS = ("auto", "modelopt", "builtin")


@dataclass
class QuantOptions:
    scheme: str | None = None          # CLI name: fp8 | int8_sq | int8_wo | int4_wo | int4_awq
    kv_cache: str | None = None        # "fp8"
    calib_data: Path | None = None     # .jsonl ({"text": ...} per line) or a text file; None: built-in text
    calib_size: int = 16               # calibration sequences
    calib_seq_len: int = 256           # tokens per calibration sequence
    group_size: int | None = None      # int4_awq: default 128 (64 or 32 when 128 does not divide)
    smoothquant_alpha: float = 0.5
    calibrator: str = "auto"
    quantize_lm_head: bool = False     # lm_head quantized with `scheme` too (default: kept in the model dtype)

    def validate(self) -> None:
        if self.scheme is not None and self.scheme not in CLI_SCHEMES:
            raise ConfigError(f"--quant {self.scheme!r} is not one of {', '.join(CLI_SCHEMES)}")
        if self.kv_cache not in (None, "fp8"):
            raise ConfigError(f"--kv-cache {self.kv_cache!r} is not supported; expected fp8")
        if self.calib_size < 1 or self.calib_seq_len < 2:
            raise ConfigError(f"--calib-size must be >= 1 and --calib-seq-len >= 2, got {self.calib_size}, "
                              f"{self.calib_seq_len}")
        if not 0.0 <= self.smoothquant_alpha <= 1.0:
            raise ConfigError(f"--smoothquant-alpha must lie in [0, 1], got {self.smoothquant_alpha}")
        if self.quantize_lm_head and self.scheme is None:
            raise ConfigError("--quantize-lm-head needs --quant")
        if self.group_size is not None and self.scheme != "int4_awq":
            raise ConfigError("--group-size applies to --quant int4_awq only")
        if self.calibrator not in CALIBRATORS:
            raise ConfigError(f"--calibrator {self.calibrator!r} is not one of {', '.join(CALIBRATORS)}")
        if self.calib_data is not None and not Path(self.calib_data).is_file():
            raise ConfigError(f"--calib-data {self.calib_data} is not a file")

    @property
    def needs_calibration(self) -> bool:
        return self.kv_cache is not None or (self.scheme is not None
                                             and scheme_of(CLI_SCHEMES[self.scheme]).needs_calibration)


def resolve_calibrator(options: QuantOptions, model: ModelConfig) -> str:
    """"modelopt" or "builtin": what calibrates. "auto" takes ModelOpt where it is installed and
    supports the model (the llama family), and says so when it falls back; an explicit "modelopt"
    that cannot run is an error."""
    from .modelopt_calibrate import modelopt_unavailable

    if options.calibrator == "builtin":
        return "builtin"
    missing = modelopt_unavailable(model)
    if missing is None:
        return "modelopt"
    if options.calibrator == "modelopt":
        raise ConfigError(f"--calibrator modelopt: {missing}")
    log.warning("%s; calibrating with the built-in calibrator instead", missing)
    return "builtin"


def quant_config(options: QuantOptions, model: ModelConfig, calibrator: str = "builtin") -> QuantConfig:
    """The checkpoint's QuantConfig. AWQ's default group of 128 falls back to 64 (then 32) when it
    does not divide every layer's inputs (SmolLM2's hidden size is 576), with a warning; a group
    size given explicitly must divide them."""
    options.validate()
    algo = CLI_SCHEMES[options.scheme] if options.scheme else None
    group_size = None
    if options.scheme == "int4_awq":
        sizes = model.linear_input_sizes().values()
        group_size = options.group_size or DEFAULT_AWQ_GROUP_SIZE
        if options.group_size is None and any(k % group_size for k in sizes):
            fallback = next((g for g in FALLBACK_GROUP_SIZES if all(k % g == 0 for k in sizes)), None)
            if fallback is None:
                raise ConfigError(f"no AWQ group size in {(DEFAULT_AWQ_GROUP_SIZE, *FALLBACK_GROUP_SIZES)} divides "
                                  f"the layers' inputs {sorted(set(sizes))}; pass --group-size")
            log.warning("AWQ group size %d does not divide the layers' inputs %s: using group size %d",
                        group_size, sorted(set(sizes)), fallback)
            group_size = fallback
    return QuantConfig(quant_algo=algo, kv_cache_quant_algo="FP8" if options.kv_cache == "fp8" else None,
                       group_size=group_size,
                       smoothquant_alpha=options.smoothquant_alpha if options.scheme == "int8_sq" else None,
                       quantize_lm_head=options.quantize_lm_head, source=f"{calibrator} calibration" if options.needs_calibration else "round-to-nearest")
