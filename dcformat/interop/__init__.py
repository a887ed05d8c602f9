"""Exchange with other formats and frameworks: safetensors, PyTorch ``.pt``, numpy ``.npz``,
ONNX initializers and the Deep Compression authors' ``.net`` layout (``convert``), and models
on disk read tensor by tensor (``sources``)."""
