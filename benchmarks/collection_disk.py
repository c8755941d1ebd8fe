"""A collection's disk, split into its fixed fitted state and what each picture adds.

    python benchmarks/collection_disk.py COLL [--target 4096]

Every file and folder under COLL is counted, a hard-linked file once, as `du -sb` counts.
Fixed: the generation's fuser and codec bases, and the bases inside the evaluate cache's
files (their `mean`, `components` and `components_scales` arrays, as deflated there). The
rest, over the generation's pictures, is what a picture adds (the evaluate cache's share of
it is printed too); from those two, the smallest collection at or under `--target` bytes a
picture, everything included.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np
from dense_scale import folder_bytes

from lookalike.store.codec import CODEC_FILE
from lookalike.store.collection import Collection

BASIS_ARRAYS = ("mean", "components", "components_scales")


def file_bytes(root: Path) -> int:
    """As `du -sb`: the files as `dense_scale.py` counts them (a hard-linked file once), and
    the folders."""
    folders = [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]
    return folder_bytes(root) + sum(folder.stat().st_size for folder in folders)


def cache_bases_bytes(cache: Path) -> int:
    total = 0
    for path in cache.rglob("*.npz"):
        with zipfile.ZipFile(path) as archive:  # as stored: deflated (cache_file.py)
            members = archive.infolist()
            total += sum(m.compress_size for m in members if m.filename[:-4] in BASIS_ARRAYS)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--target", type=int, default=4096, help="bytes a picture")
    args = parser.parse_args()
    coll = Collection.open(args.collection)
    gen = coll.require_generation()
    pictures = len(gen.ids)
    parts = {
        "fuser.npz": (gen.path / "fuser.npz").stat().st_size,
        f"blocks/{CODEC_FILE}": (gen.path / "blocks" / CODEC_FILE).stat().st_size
        if (gen.path / "blocks" / CODEC_FILE).exists()
        else 0,
        "cache bases": cache_bases_bytes(coll.cache_dir) if coll.cache_dir.is_dir() else 0,
    }
    total, fixed = file_bytes(args.collection), sum(parts.values())
    each = (total - fixed) / pictures
    print(f"{args.collection}: {pictures} pictures, {total} B, {total / pictures:.0f} B a picture")
    print("fixed: " + ", ".join(f"{k} {v}" for k, v in parts.items()) + f"; {fixed} B in all")
    print(f"a picture adds {each:.0f} B")
    if coll.cache_dir.is_dir():
        cache = (file_bytes(coll.cache_dir) - parts["cache bases"]) / pictures
        print(f"of which the evaluate cache (cache/, beside its bases) {cache:.0f} B")
    if each < args.target:
        smallest = int(np.ceil(fixed / (args.target - each)))
        print(f"at most {args.target} B a picture from {smallest} pictures")
    else:
        print(f"above {args.target} B a picture at any size")


if __name__ == "__main__":
    main()
