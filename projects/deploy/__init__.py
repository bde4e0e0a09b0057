"""Deployment: ONNX export of the detectors and their evaluation in ONNX Runtime
(``pip install -e .[deploy]``; the modules import onnx and onnxruntime only when used)."""
