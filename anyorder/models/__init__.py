"""Backbones, the masked-diffusion objective and the AnyOrderModule."""
