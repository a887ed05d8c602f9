"""The paper's reproduction, an application of the library: LeNet-300-100 and LeNet-5 on
MNIST through pruning, trained quantization and Huffman coding (``dcformat reproduce``).

Modules: ``mnist`` (the IDX reader, numpy only), ``models`` (the two LeNets), ``training``
(plain training and evaluation loops), ``reproduce`` (the recipes and the end-to-end run).
MNIST is found only where it is said to be: ``--data`` / ``data_dir`` or ``$DCFORMAT_MNIST``.
"""
