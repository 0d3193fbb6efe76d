"""IndexSpec: the settings that shape what a library stores, recorded in its catalog.

Beside the model that built it (invariant 4), a library records how it cut text into chunks, how
its HNSW graph is built and which files it takes in. They are fixed when the library is created
or reindexed: a Library given one explicitly that differs from the recorded one refuses to open
(the fix is `edge-dse reindex`), and a setting not given is the recorded one. Search-time knobs
(ef_search, the rerank depth) change nothing stored, so they are not part of it.

This module imports nothing heavy: `import edge_dse` stays fast (invariant 3).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Callable


@dataclass(frozen=True)
class IndexSpec:
    """What a library's stored chunks, graph and file list depend on (docs/architecture.md)."""

    chunk_tokens: int  # tokens of text per chunk: the encoder's max length less [CLS] and [SEP]
    hnsw_m: int  # links per node of the HNSW graph (AnnIndex's M)
    hnsw_ef_construction: int  # the candidate list while inserting (AnnIndex's ef_construction)
    max_file_bytes: int  # larger files are skipped
    ignore_dirs: tuple[str, ...]  # names of folders never entered, sorted
    include_hidden: bool  # whether hidden files and folders are indexed

    @classmethod
    def default(cls, chunk_tokens: int) -> "IndexSpec":
        """The settings of a library given none, for a model whose chunks hold chunk_tokens."""
        from .ingest import DEFAULT_IGNORE_DIRS, DEFAULT_MAX_BYTES
        from .store import AnnIndex

        return cls(chunk_tokens=chunk_tokens, hnsw_m=AnnIndex.DEFAULTS["M"],
                   hnsw_ef_construction=AnnIndex.DEFAULTS["ef_construction"], max_file_bytes=DEFAULT_MAX_BYTES,
                   ignore_dirs=tuple(sorted(DEFAULT_IGNORE_DIRS)), include_hidden=False)

    def meta(self) -> dict[str, str]:
        """The catalog meta rows that record it: one per field, named after it, its value as JSON
        ("254", "true", '[".git", ...]'); `chunk_tokens` is the row libraries recorded before."""
        return {f.name: json.dumps(list(value) if isinstance(value, tuple) else value)
                for f in fields(self) for value in [getattr(self, f.name)]}

    @classmethod
    def recorded(cls, get_meta: Callable[[str], str | None]) -> dict:
        """The fields a catalog records (Catalog.get_meta), parsed: a library made before a field
        was recorded lacks it."""
        found = {}
        for f in fields(cls):
            raw = get_meta(f.name)
            if raw is not None:
                value = json.loads(raw)
                found[f.name] = tuple(value) if isinstance(value, list) else value
        return found

    def differences(self, recorded: dict) -> list[str]:
        """'name X recorded, Y given' for each recorded field this spec sets otherwise (for the
        ignored folders, only the names in one and not the other: the full lists are long)."""
        found = []
        for name, value in recorded.items():
            mine = getattr(self, name)
            if mine == value:
                continue
            if isinstance(value, tuple):
                value, mine = sorted(set(value) - set(mine)), sorted(set(mine) - set(value))
            found.append(f"{name} {value!r} recorded, {mine!r} given" + (" (beside the shared ones)" if name == "ignore_dirs" else ""))
        return found


def rebuild_flags(spec: IndexSpec, fields_changed: set[str], *, max_length: int) -> str:
    """The `edge-dse index` / `reindex` flags that ask for `spec`'s value of each changed field (as
    one string, each flag led by a space), so a refusal can name the exact rebuild command.
    max_length is the encoder window that gives spec.chunk_tokens. A value the flags cannot
    express (a set of ignored folders lacking a default name, hidden files off, a size in bytes)
    is named as the API's argument."""
    from .ingest import DEFAULT_IGNORE_DIRS

    flags = []
    if "chunk_tokens" in fields_changed:
        flags.append(f"--max-length {max_length}")
    if "hnsw_m" in fields_changed:
        flags.append(f"--hnsw-m {spec.hnsw_m}")
    if "hnsw_ef_construction" in fields_changed:
        flags.append(f"--hnsw-ef-construction {spec.hnsw_ef_construction}")
    if "max_file_bytes" in fields_changed:
        mb = spec.max_file_bytes / 2**20
        flags.append(f"--max-file-mb {mb:g}" if mb == round(mb, 3) else f"(max_bytes={spec.max_file_bytes})")
    if "include_hidden" in fields_changed:  # the flag only turns it on
        flags.append("--include-hidden" if spec.include_hidden else "(include_hidden=False)")
    if "ignore_dirs" in fields_changed:
        if set(DEFAULT_IGNORE_DIRS) <= set(spec.ignore_dirs):
            flags += [f"--ignore-dir {name}" for name in spec.ignore_dirs if name not in DEFAULT_IGNORE_DIRS]
        else:
            flags.append(f"(ignore_dirs={list(spec.ignore_dirs)})")
    return "".join(" " + flag for flag in flags)
