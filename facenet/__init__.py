"""Face embeddings of the study's images and distances between them.

``backends`` contains the registry of embedding models (dlib and FaceNet
graphs). ``alignment`` cuts MTCNN face crops and standardizes pixels, and
``graph_model`` loads FaceNet graphs with TensorFlow 2. ``store`` reads and
writes the ``.npz`` embedding files, and ``distance`` computes cosine
distances. The scripts ``calculate_embeddings.py`` and ``gans_compare.py``
in this folder run them, with the command-line options of ``options``.
"""
