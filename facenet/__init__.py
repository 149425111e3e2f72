"""Face embeddings of the study's images and distances between them.

``backends`` contains the registry of embedding models, ``store`` reads and
writes the ``.npz`` embedding files, and ``distance`` computes cosine distances. The scripts
``calculate_embeddings.py`` and ``gans_compare.py`` in this folder run them.
"""
