"""Evaluation: closed-loop rollouts, occlusion, inference tasks, metrics and figures."""
