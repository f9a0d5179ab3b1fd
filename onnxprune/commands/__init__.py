"""One module per CLI command; each is a thin click layer over a function in `onnxprune.api`."""
