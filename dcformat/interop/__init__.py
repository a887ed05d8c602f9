"""Exchange with other formats and frameworks.

One module per format, each with a reader and a writer and a ``FORMAT`` for the registry
(:mod:`.formats`): :mod:`.safetensors`, :mod:`.npz`, :mod:`.pt` (PyTorch ``.pt``, weights
only), :mod:`.onnx` (a model's initializers), :mod:`.dcf` and :mod:`.caffe` (the Deep
Compression authors' ``.net`` layout). :mod:`.convert` joins any reader to any writer;
:mod:`.common` holds what the format modules share; :mod:`.sources` reads models on disk
tensor by tensor; :mod:`.torch_arrays` is the one bridge between torch tensors and numpy
arrays (it imports torch, so only code that needs torch imports it)."""
