"""Pseudo flow without labels: an UnSAMFlow-style network, its losses and classical baselines."""
