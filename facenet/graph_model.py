"""FaceNet models saved by TensorFlow 1, run with TensorFlow 2.

The FaceNet project (github.com/davidsandberg/facenet) distributes each model
as a frozen graph (``<name>.pb``) and as a checkpoint folder (``model-*.meta``
plus ``model-*.ckpt-*.index`` and ``.data-*`` files). Both contain the tensors
``input:0`` (float32 images ``[N, S, S, 3]``), ``phase_train:0`` (bool, False
at inference) and ``embeddings:0`` (``[N, D]``). The graph is imported inside
``tf.compat.v1.wrap_function`` and pruned to the path from the input to the
embeddings, so the training input pipeline stored in checkpoints never runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from study.errors import StageError

log = logging.getLogger(__name__)

INPUT_TENSOR = "input:0"
PHASE_TRAIN_TENSOR = "phase_train:0"
OUTPUT_TENSOR = "embeddings:0"
# Operation types that end a graph without being a model output.
_NOT_OUTPUTS = {"NoOp", "Const", "Assert", "SaveV2", "RestoreV2", "Save", "Restore", "Assign",
                "AssignVariableOp", "VarHandleOp", "VariableV2", "MergeV2Checkpoints", "Print",
                "PrintV2", "ShardedFilename", "StringJoin"}
_LISTED = 20


class GraphTensorsNotFound(ValueError):
    """A model graph lacks the input or output tensor that FaceNet graphs have."""


def model_files(model_path: Path) -> tuple[str, list[Path], str | None]:
    """Return ``(kind, files, checkpoint_prefix)`` for a ``.pb`` file or a checkpoint folder.

    ``kind`` is ``frozen`` or ``checkpoint``, ``files`` are the files whose
    bytes define the model (meta graph first for a checkpoint), and
    ``checkpoint_prefix`` is None for a frozen graph.
    """
    if model_path.is_file():
        if model_path.suffix != ".pb":
            raise ValueError(f"invalid --model_path {model_path}: expected a frozen graph file "
                             "ending in .pb or a checkpoint folder with a .meta file")
        return "frozen", [model_path], None
    if not model_path.is_dir():
        raise FileNotFoundError(f"FaceNet model not found: {model_path}. Pass the .pb file or the "
                                "checkpoint folder downloaded from the FaceNet project")
    metas = sorted(model_path.glob("*.meta"))
    if len(metas) != 1:
        frozen = sorted(path.name for path in model_path.glob("*.pb"))
        hint = f"; to use a frozen graph, pass its file ({', '.join(frozen)})" if frozen else ""
        raise ValueError(f"checkpoint folder {model_path} must contain exactly one .meta file, "
                         f"found {len(metas)}{hint}")
    prefix = _checkpoint_prefix(model_path)
    data_files = sorted(model_path.glob(Path(prefix).name + ".data-*"))
    if not data_files:
        raise FileNotFoundError(f"checkpoint {prefix} has no .data-* file in {model_path}")
    return "checkpoint", [metas[0], Path(prefix + ".index"), *data_files], prefix


def _checkpoint_prefix(folder: Path) -> str:
    """Return the checkpoint named in the folder's ``checkpoint`` file, or its only ``.index`` file."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(folder))
    if latest and Path(latest + ".index").is_file():
        return latest
    indexes = sorted(folder.glob("*.index"))
    if len(indexes) != 1:
        names = ", ".join(path.name for path in indexes) or "none"
        raise ValueError(f"cannot tell which checkpoint of {folder} to load: no usable "
                         f"'checkpoint' file and {len(indexes)} .index files ({names})")
    return str(indexes[0].with_suffix(""))


def _describe(tensor) -> str:
    shape = "unknown" if tensor.shape.rank is None else str(tuple(tensor.shape.as_list()))
    return f"{tensor.name} ({tensor.dtype.name}, {shape})"


def _candidate_tensors(graph) -> tuple[list[str], list[str]]:
    """Return descriptions of the placeholders and of the tensors that no operation consumes."""
    inputs, outputs = [], []
    for operation in graph.get_operations():
        if operation.type in ("Placeholder", "PlaceholderWithDefault"):
            inputs.extend(_describe(tensor) for tensor in operation.outputs)
        elif operation.type not in _NOT_OUTPUTS:
            outputs.extend(_describe(tensor) for tensor in operation.outputs
                           if not tensor.consumers() and tensor.dtype.is_floating)
    return inputs, outputs


def _missing_tensors_error(model_path: Path, graph, missing: list[str]) -> GraphTensorsNotFound:
    inputs, outputs = _candidate_tensors(graph)

    def listing(values: list[str]) -> str:
        if not values:
            return "none"
        more = f" and {len(values) - _LISTED} more" if len(values) > _LISTED else ""
        return ", ".join(values[:_LISTED]) + more

    return GraphTensorsNotFound(
        f"model {model_path} has no tensor {', '.join(missing)}, so it is not a FaceNet graph "
        f"(FaceNet graphs name their tensors {INPUT_TENSOR}, {PHASE_TRAIN_TENSOR} and "
        f"{OUTPUT_TENSOR}). Placeholders, possible inputs: {listing(inputs)}. Tensors that no "
        f"operation consumes, possible outputs: {listing(outputs)}")


class GraphModel:
    """A FaceNet graph that maps float32 images ``[N, S, S, 3]`` to embeddings ``[N, D]``.

    ``input_size`` (S) and ``dim`` (D) are read from the graph. Pass
    ``input_size`` only for a graph whose input shape leaves S open.
    Raises GraphTensorsNotFound listing candidate tensors when the graph has
    no ``input:0`` or ``embeddings:0``.
    """

    def __init__(self, model_path: str | Path, input_size: int | None = None):
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise StageError(f"the facenet backend needs TensorFlow ({exc}); install it with "
                             "'pip install -r requirements.txt'") from exc
        self._tf = tf
        self.path = Path(model_path)
        self.kind, self.files, prefix = model_files(self.path)
        if self.kind == "frozen":
            wrapped = self._import_frozen(self.files[0])
        else:
            wrapped = self._import_checkpoint(self.files[0], prefix)
        graph = wrapped.graph

        names = {tensor: self._find(graph, tensor)
                 for tensor in (INPUT_TENSOR, PHASE_TRAIN_TENSOR, OUTPUT_TENSOR)}
        missing = [name for name in (INPUT_TENSOR, OUTPUT_TENSOR) if names[name] is None]
        if missing:
            raise _missing_tensors_error(self.path, graph, missing)
        image_input, phase_train, output = (names[INPUT_TENSOR], names[PHASE_TRAIN_TENSOR],
                                            names[OUTPUT_TENSOR])
        if image_input.dtype != tf.float32:
            raise ValueError(f"{INPUT_TENSOR} of {self.path} is {image_input.dtype.name}, "
                             "expected float32 images")
        self.input_size = self._input_size(image_input, input_size)

        feeds = [image_input]
        if phase_train is None:
            log.info("%s has no %s tensor, so none is fed", self.path, PHASE_TRAIN_TENSOR)
        else:
            feeds.append(phase_train)
        self._has_phase_train = phase_train is not None
        self._function = wrapped.prune(feeds=feeds, fetches=output)
        self.dim = self._embedding_dim(output)

    def _import_frozen(self, path: Path):
        from google.protobuf.message import DecodeError

        tf = self._tf
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(path.read_bytes())
        except DecodeError as exc:
            raise ValueError(f"{path} is not a TensorFlow GraphDef file ({exc})") from exc

        def import_graph():
            tf.compat.v1.import_graph_def(graph_def, name="")

        return tf.compat.v1.wrap_function(import_graph, [])

    def _import_checkpoint(self, meta_path: Path, prefix: str):
        tf = self._tf
        savers = []

        def import_meta_graph():
            savers.append(tf.compat.v1.train.import_meta_graph(str(meta_path), clear_devices=True))

        wrapped = tf.compat.v1.wrap_function(import_meta_graph, [])
        saver = savers[0]
        if saver is None:
            log.warning("%s contains no variables, so nothing is restored from %s", meta_path, prefix)
            return wrapped
        # Run the meta graph's own restore operation once, with the checkpoint prefix fed to it.
        graph = wrapped.graph
        restore = wrapped.prune(
            feeds=[graph.get_tensor_by_name(saver.saver_def.filename_tensor_name)],
            fetches=[graph.get_operation_by_name(saver.saver_def.restore_op_name)])
        restore(tf.constant(prefix))
        return wrapped

    @staticmethod
    def _find(graph, name: str):
        try:
            return graph.get_tensor_by_name(name)
        except (KeyError, ValueError):
            return None

    def _input_size(self, image_input, requested: int | None) -> int:
        shape = image_input.shape
        if shape.rank != 4 or shape[3] not in (None, 3):
            raise ValueError(f"{INPUT_TENSOR} of {self.path} has shape {shape}, expected "
                             "[N, S, S, 3] RGB images")
        height, width = shape[1], shape[2]
        if height is not None and width is not None and height != width:
            raise ValueError(f"{INPUT_TENSOR} of {self.path} takes {width}x{height} images; only "
                             "square inputs are supported")
        fixed = height if height is not None else width
        if fixed is None:
            if requested is None:
                raise ValueError(f"{INPUT_TENSOR} of {self.path} does not fix the image size; "
                                 "pass it with --input_size")
            return requested
        if requested is not None and requested != fixed:
            raise ValueError(f"--input_size {requested} differs from the {fixed} px input of "
                             f"{self.path}")
        return int(fixed)

    def _embedding_dim(self, output) -> int:
        if output.shape.rank == 2 and output.shape[1] is not None:
            return int(output.shape[1])
        probe = self(np.zeros((1, self.input_size, self.input_size, 3), np.float32))
        if probe.ndim != 2:
            raise ValueError(f"{OUTPUT_TENSOR} of {self.path} has shape {probe.shape} for one "
                             "image, expected [1, D]")
        return int(probe.shape[1])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Return the float32 embeddings ``[N, D]`` of standardized images ``[N, S, S, 3]``."""
        tf = self._tf
        args = [tf.constant(np.asarray(batch, dtype=np.float32))]
        if self._has_phase_train:
            args.append(tf.constant(False))
        return np.asarray(self._function(*args), dtype=np.float32)
