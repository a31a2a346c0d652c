"""Training one UNODE model: the step and loop (train.py), its losses, optimisers,
sampling, checkpoints, metrics log and memory check."""
