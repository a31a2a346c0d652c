"""PyTorch checkpoints (.pt/.pth) read without torch and without running their code."""
