"""Hydra launcher plugin of anyorder (found by Hydra through the ``hydra_plugins`` namespace)."""
