"""PyTorch models of rnnlab: modules, training, evaluation, sampling and checkpoints.

Imports torch and pipeline/ (for the vocabulary and dataset layout), never prefect.
"""
