"""Re-fit: least-squares reconstruction of the kept weights against the dense model's outputs, layer by layer."""
