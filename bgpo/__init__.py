"""bgpo: memory-efficient RL for diffusion language models (BGPO and baselines)."""

__version__ = "0.1.0"
