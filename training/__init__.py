"""Offline training of the autoencoder family (PyTorch), exported to ONNX for the service."""
