"""Shared library of the GAN regularization and inpainting study.

The top-level scripts parse arguments and call into this package; nothing
here reads ``sys.argv``.
"""
