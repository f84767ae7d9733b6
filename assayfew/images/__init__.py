"""Few-shot image classification (Omniglot, MiniImagenet) on the meta-learning core: Conv-4 model, readers,
N-way K-shot episodes (mutually exclusive or not), training and accuracy evaluation."""
