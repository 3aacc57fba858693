"""anyorder: any-order masked training of diffusion-LLM agents on BabyAI trajectories."""

__version__ = "0.1.0"
