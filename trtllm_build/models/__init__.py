from .causal_lm import CausalLM, trace

__all__ = ["CausalLM", "trace"]
