"""When an index run may grow the committed generation instead of fitting and building anew.

Refitting the fuser changes every stored vector, so the index must then be built again: at
a million items the graph alone takes minutes (benchmarks/README.md, "Where issue 16
stands": 791 s to build at 1M, 46.5 s to add 1 % to it).
A run that only added pictures keeps the fuser, fuses the new rows with it and adds them to
the index (`fuse.fitting.extend_fused_index`). The fuser was fitted without labels on the
rows it had; pictures added later are fused as well as a refit would while they are few
next to those, so the run refits (and builds) once the collection has grown by a quarter
since the fit: every item is then rebuilt a bounded number of times, as a growing array is
copied. Small collections are always refitted: that costs seconds, and each picture
added moves a fit on a few hundred rows.
"""

from __future__ import annotations

from lookalike.config import PipelineConfig
from lookalike.index import VectorIndex

# Refit once the collection holds this many times the rows the fuser was fitted on.
REFIT_GROWTH = 1.25
# Below this many fitted rows every run refits (cheap, and the fit still learns).
EXTEND_MIN_ROWS = 1000


def grows_in_place(
    config: PipelineConfig, fitted_rows: int | None, committed: int, total: int, index: VectorIndex
) -> bool:
    """Whether a generation of `committed` rows, grown by new pictures only to `total`, may
    keep its fuser (fitted on `fitted_rows`; None: unknown, so `committed`) and add the new
    rows to its `index` instead of fitting and building anew."""
    fitted = committed if fitted_rows is None else fitted_rows
    return (
        # Query expansion moves the stored vectors' neighbours whenever a picture comes.
        not config.fusion.expand_k
        and total > committed
        and fitted >= EXTEND_MIN_ROWS
        and total <= REFIT_GROWTH * fitted
        and index.extends(total - committed)
    )
