"""The text encoder and everything about it: loading and building it, its identity, its tokens, its ONNX
graph and the backends that run it (PyTorch, ONNX Runtime, a TEI service)."""
