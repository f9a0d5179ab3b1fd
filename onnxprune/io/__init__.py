"""Load: ONNX models (load, normalise, name, validate, save), data files, onnxruntime sessions, the small graph API."""
