"""Autoencoder serving: FastAPI in front of ONNX Runtime. Never imports torch.

Importing the package itself stays cheap and framework-free so that `service.contract` (the contract with
the training side) can be imported without FastAPI or ONNX Runtime.
"""

__version__ = "0.1.0"
