"""Workflows: orchestration only (one pruning run, certification, and the whole `compress` chain)."""
