#!/usr/bin/env python3
"""Compare each GAN's inpaintings with the original faces: embed the image database
(<root>/imagesdb) and write the cosine distance of every original to every model's
final blended inpainting to <root>/gan_distances.csv (one row per test image)."""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python facenet/gans_compare.py`, Python puts facenet/ first on the
# path, but the packages live one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import logging  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from facenet.distance import cosine_distance  # noqa: E402
from facenet.inputs import ExactSizeLoader, read_image_database, read_preprocessing  # noqa: E402
from facenet.options import add_backend_arguments, backend_from_args  # noqa: E402
from facenet.store import EmbeddingSet, embed_images, embedding_file, require_same_protocol  # noqa: E402
from study import presets, provenance  # noqa: E402
from study.cli import add_output_arguments, run_main, setup_logging  # noqa: E402
from study.layout import Layout  # noqa: E402

log = logging.getLogger("gans_compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="experiment",
                        help="experiment output folder (default: experiment)")
    add_backend_arguments(parser)
    presets.add_preset_argument(parser)
    parser.add_argument("--batch_size", type=int, default=None,
                        help="images per embedding call" + presets.preset_help("embed", "batch_size"))
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a gan_distances.csv that was computed from other images "
                             "or another embedder")
    add_output_arguments(parser)
    return parser


def inputs_path(csv_path: Path) -> Path:
    """Return the JSON file next to the CSV that records which inputs produced it."""
    return csv_path.with_name(f"{csv_path.stem}.inputs.json")


def inputs_fingerprint(sets: dict[str, EmbeddingSet]) -> str:
    """Return a sha256 over the protocol and the (source, key, file hash) of every image."""
    lines = [f"protocol\t{require_same_protocol(sets)}"]
    for source in sorted(sets):
        data = sets[source]
        lines.extend(f"{source}\t{key}\t{digest}"
                     for key, digest in sorted(zip(data.keys.tolist(), data.sha256.tolist())))
    return provenance.sha256_lines(lines)


def source_fingerprints(sets: dict[str, EmbeddingSet]) -> dict[str, str]:
    """Return a sha256 per source over its (key, file hash) pairs."""
    return {source: provenance.sha256_lines(
        f"{key}\t{digest}" for key, digest in sorted(zip(data.keys.tolist(), data.sha256.tolist())))
        for source, data in sets.items()}


def distance_table(original: EmbeddingSet, generated: dict[str, EmbeddingSet]) -> pd.DataFrame:
    """Return one row per test index and one column of cosine distances per model.

    A cell is NaN when the model has no inpainting of that image or when a
    vector is zero. Both cases are logged as warnings with the indices.
    """
    if "idx" in generated:
        raise ValueError("a model named 'idx' would clash with the index column; rename its "
                         "gen/idx.jpg files and model folder")
    index_keys = set(original.keys.tolist())
    for data in generated.values():
        index_keys.update(data.keys.tolist())
    ordered = sorted(index_keys, key=int)
    original_rows = original.rows_by_key()
    table = pd.DataFrame({"idx": [int(key) for key in ordered]})
    for model in sorted(generated):
        data = generated[model]
        model_rows = data.rows_by_key()
        paired = [key for key in ordered if key in original_rows and key in model_rows]
        missing = [key for key in ordered if key not in paired]
        if missing:
            log.warning("model %s: no distance for %d image(s) without both an original and an "
                        "inpainting: idx %s", model, len(missing), ", ".join(missing[:20]))
        distances = cosine_distance(
            original.embeddings[[original_rows[key] for key in paired]].reshape(len(paired), -1),
            data.embeddings[[model_rows[key] for key in paired]].reshape(len(paired), -1),
            labels=[f"{model} idx {key}" for key in paired])
        by_key = dict(zip(paired, distances))
        table[model] = [by_key.get(key, np.nan) for key in ordered]
    return table


def check_overwrite(csv_path: Path, fingerprint: str, overwrite: bool,
                    sources: dict[str, str] | None = None, protocol: str | None = None) -> None:
    """Raise FileExistsError when ``csv_path`` exists and came from other inputs, unless ``overwrite``.

    A rerun whose inputs only add models (every earlier source unchanged,
    same protocol) may rewrite the table, since its earlier columns come out
    the same.
    """
    if overwrite or not csv_path.exists():
        return
    record_path = inputs_path(csv_path)
    record = {}
    if record_path.is_file():
        record = provenance.read_json(record_path)
    if record.get("inputs_sha256") == fingerprint:
        return
    earlier = record.get("sources")
    if earlier and sources and record.get("protocol") == protocol \
            and all(sources.get(name) == digest for name, digest in earlier.items()):
        added = sorted(set(sources) - set(earlier))
        log.info("%s: adding %s to the earlier models' distances", csv_path, ", ".join(added))
        return
    changed = sorted(name for name, digest in (earlier or {}).items() if (sources or {}).get(name) != digest)
    detail = f"changed or missing sources: {', '.join(changed)}" if changed else "other images or embedder"
    raise FileExistsError(
        f"{csv_path} exists and was computed from other inputs ({detail}; see {record_path}); "
        "pass --overwrite to replace it, or choose another --root")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    presets.apply_preset(args, "embed")
    layout = Layout(args.root)
    prep = read_preprocessing(layout)
    database = read_image_database(layout.imagesdb)
    log.info("image database %s: %d originals, models %s", layout.imagesdb,
             len(database.originals), ", ".join(database.models))
    backend = backend_from_args(args, prep)
    protocol = backend.protocol_name()
    loader = ExactSizeLoader(prep.size)

    def embed(source: str, items) -> EmbeddingSet:
        return embed_images(items, backend, loader, embedding_file(layout.embeddings, source, protocol),
                            source, loader.describe(), batch_size=args.batch_size,
                            progress=args.progress, workers=args.workers).embeddings

    original = embed("db_original", database.originals)
    generated = {model: embed(f"db_{model}", items) for model, items in database.generated.items()}
    sets = {"db_original": original, **{f"db_{model}": data for model, data in generated.items()}}
    fingerprint = inputs_fingerprint(sets)
    csv_path = layout.gan_distances
    sources = source_fingerprints(sets)
    check_overwrite(csv_path, fingerprint, args.overwrite, sources, protocol)

    table = distance_table(original, generated)
    provenance.write_text_atomic(csv_path, table.to_csv(index=False))
    provenance.write_json_atomic(inputs_path(csv_path),
                                 {"inputs_sha256": fingerprint, "protocol": protocol, "sources": sources,
                                  "imagesdb": str(layout.imagesdb.resolve()),
                                  "models": database.models})
    provenance.record(layout.root, "gans_compare", {**vars(args), "protocol": protocol,
                                                    "protocol_details": backend.protocol_details(),
                                                    "models": database.models,
                                                    "rows": len(table)})
    means = ", ".join(f"{model} {table[model].mean():.4f}" for model in database.models)
    log.info("wrote %s (%d images); mean cosine distance: %s", csv_path, len(table), means)
    return 0


if __name__ == "__main__":
    run_main(main)
