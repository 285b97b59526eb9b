"""Quantization: schemes and their tensors (schemes), numerics (numerics), calibration
(calibrate, torch), weight quantization (quantize_weights) and import of ModelOpt exports
(modelopt_import). Importing this package needs no torch."""
