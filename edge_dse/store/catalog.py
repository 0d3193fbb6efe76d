"""The catalog: one SQLite file that is the library's source of truth (docs/invariants.md, 1).

Tables
    meta      key/value: schema_version, catalog_id (a random id, so an HNSW cache built for
              another catalog is never mistaken for ours), generation (bumped by every
              committed change to chunks), and whatever the Library records (model id, dim).
    folders   the folders the user added.
    files     one row per file seen: stat, content hash, status ("ok" | "error") and reason.
    chunks    id INTEGER PRIMARY KEY AUTOINCREMENT (never reused: ids are the HNSW labels),
              path, character offsets, heading, text and the float32 vector as a BLOB.
    chunks_fts  FTS5 over chunks(text, heading), kept in step by triggers (external content).

Concurrency: WAL journal, so readers never block the writer and see each commit as soon as it
is made; one writer at a time is enforced above us by the WriterLock, and busy_timeout makes a
second connection wait instead of failing on a momentary SQLite lock.

Writes go through raw SQL inside `transaction()` (BEGIN IMMEDIATE .. COMMIT). sqlite-utils'
own write helpers wrap themselves in `with conn:`, which COMMITs whatever transaction is open,
so using them inside ours would break put_file's all-or-nothing promise.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import unicodedata
import uuid
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import sqlite_utils

from ..errors import CatalogCorruptError, EdgeDSEError, ModelMismatchError

SCHEMA_VERSION = 1

# How long a connection waits for another's SQLite lock before giving up (seconds). Only
# checkpoints and the rare overlap of a reader's snapshot with a writer make this wait.
BUSY_TIMEOUT_S = 10.0
# Free pages past this share of the file trigger a VACUUM after a sync or remove: deleting or
# re-embedding a big folder frees its vector blobs, and only VACUUM gives the disk back.
RECLAIM_FRACTION = 0.25

# SQLite's default limit on bound parameters is 32766 since 3.32, 999 before: stay under both.
_IN_BATCH = 900

# Keyword queries: at most this many distinct terms are used (a pasted 1 MB document must
# not become a 100k-term query), each cut to this many characters, from at most this much text.
MAX_QUERY_TERMS = 32
MAX_TERM_CHARS = 64
MAX_QUERY_SCAN_CHARS = 100_000

# Porter stemming over unicode61: "indexing" finds "indexed"; diacritics folded so "cafe"
# finds "café". Whitespace-free scripts (Chinese, Japanese) index as whole runs: a trigram
# tokenizer would serve them better, at about 3x the index size.
FTS_TOKENIZE = "porter unicode61 remove_diacritics 2"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE IF NOT EXISTS folders (
    path     TEXT PRIMARY KEY,
    added_ns INTEGER
);
CREATE TABLE IF NOT EXISTS files (
    path     TEXT PRIMARY KEY,
    folder   TEXT NOT NULL REFERENCES folders(path) ON DELETE CASCADE,
    size     INTEGER,
    mtime_ns INTEGER,
    sha256   TEXT,
    status   TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    error    TEXT,
    n_chunks INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS files_folder ON files(folder);
CREATE INDEX IF NOT EXISTS files_sha256 ON files(sha256);
CREATE TABLE IF NOT EXISTS chunks (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    path    TEXT NOT NULL REFERENCES files(path) ON DELETE CASCADE,
    "start" INTEGER NOT NULL,
    "end"   INTEGER NOT NULL,
    heading TEXT NOT NULL DEFAULT '',
    text    TEXT NOT NULL,
    vector  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_path ON chunks(path);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5 (
    text, heading, tokenize='{FTS_TOKENIZE}', content='chunks', content_rowid='id'
);
-- The same triggers sqlite-utils' enable_fts(create_triggers=True) writes, created here with
-- IF NOT EXISTS inside the schema transaction so two processes opening a new library at
-- once cannot both half-create them.
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
  INSERT INTO chunks_fts (rowid, text, heading) VALUES (new.id, new.text, new.heading);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
  INSERT INTO chunks_fts (chunks_fts, rowid, text, heading) VALUES ('delete', old.id, old.text, old.heading);
END;
CREATE TRIGGER IF NOT EXISTS chunks_au AFTER UPDATE ON chunks BEGIN
  INSERT INTO chunks_fts (chunks_fts, rowid, text, heading) VALUES ('delete', old.id, old.text, old.heading);
  INSERT INTO chunks_fts (rowid, text, heading) VALUES (new.id, new.text, new.heading);
END;
"""

_FILE_COLUMNS = "path, folder, size, mtime_ns, sha256, status, error, n_chunks"
_CHUNK_COLUMNS = 'id, path, "start", "end", heading, text'


@dataclass(frozen=True)
class FileRow:
    path: str
    folder: str
    size: int | None  # None only for a file that failed before it could be stat'ed
    mtime_ns: int | None
    sha256: str | None
    status: str  # "ok" | "error"
    error: str | None
    n_chunks: int


@dataclass(frozen=True)
class ChunkRow:
    id: int
    path: str
    start: int
    end: int
    heading: str
    text: str


def corrupt_error(path: Path, cause: object) -> CatalogCorruptError:
    """The user error for a catalog file that cannot be read: what failed, and the recovery.
    Public so that the Library raises the same message for damage it meets mid-way."""
    return CatalogCorruptError(
        f"catalog {path} is unreadable ({cause}): restore it from a backup or delete the library "
        f"folder and re-index with `edge-dse index`"
    )


def query_terms(query: str) -> list[str]:
    """The distinct words of a user's query, as FTS5 string literals.

    Every query is treated as plain words: FTS5 syntax (quotes, *, NEAR, AND/OR/NOT, ^, -,
    column filters, parentheses) is never interpreted, so no input can raise a syntax error.
    A word is a run of letters/digits (the same split unicode61 makes); each is wrapped in
    double quotes, which cannot occur inside it. Public because distill's candidate search
    queries its own FTS5 table and must read a query the way a library does.
    """
    text = unicodedata.normalize("NFKC", query[:MAX_QUERY_SCAN_CHARS])
    seen: dict[str, str] = {}
    for match in re.finditer(r"[^\W_]+", text):
        word = match.group()[:MAX_TERM_CHARS]
        key = word.casefold()
        if key not in seen:
            seen[key] = f'"{word}"'
            if len(seen) >= MAX_QUERY_TERMS:
                break
    return list(seen.values())


def keyword_ranked(fts: Callable[[str, int], list[tuple[int, float]]], query: str, k: int) -> list[tuple[int, float]]:
    """The keyword search's policy over an FTS5 table: [(rowid, score)], best first, score = -bm25
    (higher = better); `fts(match, k)` runs one MATCH and returns its k best rows that way.
    Public so that distill's dev lists (`teacher.dev_lists`) rank passages as a library does.

    Policy: the query is plain words (see query_terms; no syntax is interpreted). Rows that hold
    ALL the words come first, ranked by BM25; if fewer than k do, the rest of the list is filled
    with rows that hold ANY of them, also by BM25. Why: a user typing several words into a search
    box expects the chunks with all of them on top (what AND-by-default engines do), but a long
    or natural-language query ("how do I rotate the logs") rarely has every word in one chunk,
    and an empty keyword list would leave hybrid search to vectors alone. A filler's score is
    capped just below the score before it, so scores never rise down the list.
    """
    if k <= 0 or not isinstance(query, str):
        return []
    terms = query_terms(query)
    if not terms:
        return []
    results = fts(" AND ".join(terms), k)
    if len(results) < k and len(terms) > 1:
        seen = {cid for cid, _ in results}
        floor = results[-1][1] if results else None
        for cid, score in fts(" OR ".join(terms), k + len(results)):
            if cid in seen:
                continue
            if floor is not None and score >= floor:
                score = np.nextafter(floor, -np.inf)
            results.append((cid, float(score)))
            floor = score
            if len(results) >= k:
                break
    return results


def _vectors_from_blobs(blobs: Sequence[bytes]) -> np.ndarray:
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    dims = {len(b) for b in blobs}
    if len(dims) != 1:
        raise ModelMismatchError(
            f"the catalog holds vectors of different sizes ({sorted(d // 4 for d in dims)}): "
            f"re-index the library with one model (`edge-dse index`)"
        )
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1).copy()


class Catalog(AbstractContextManager):  # `with Catalog(...) as x:` gives itself and closes at the end
    """The SQLite catalog. Open one per process; methods are safe to call from several threads
    (one RLock serialises them, and a transaction holds it until it ends)."""

    def __init__(self, path: Path, *, readonly: bool = False, check: bool = True) -> None:
        """Open (and, when writable, create) the catalog at `path`.

        check: run `PRAGMA quick_check` on open, so a damaged file is reported with its cure
        instead of failing later in the middle of a sync or a search. It reads every page
        once: measured 0.3 s for a 216 MB catalog (50k chunks of dim 384), cold. A caller
        that opens a big library for one quick search may pass check=False.
        """
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._depth = 0  # nesting of transaction()/snapshot(); >0 means a BEGIN is open
        self._writing = False
        if readonly and not self.path.is_file():
            raise EdgeDSEError(f"no catalog at {self.path}: create the library with `edge-dse index FOLDER`")
        try:
            if readonly:
                # mode=ro: this connection can never write, yet WAL lets it see every commit.
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                       timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as e:  # "unable to open database file": permissions, a folder
            raise EdgeDSEError(f"catalog {self.path} cannot be opened ({e}): check the folder's permissions") from e
        self._conn = conn
        self.db = sqlite_utils.Database(conn)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            if check:
                result = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
                if result != ["ok"]:
                    raise corrupt_error(self.path, "; ".join(result[:3]))
            if readonly:
                self._check_schema()
            elif self._meta_raw("schema_version") != str(SCHEMA_VERSION):
                # A new (or older) catalog. WAL is a property of the file, set once by a
                # writer. An existing current one needs no write at all to open, so opening
                # never waits for another process's write transaction.
                self._create_with_retry()
            if not readonly:
                # synchronous=FULL fsyncs the WAL at every commit, so a commit survives power
                # loss too, not only a process crash (NORMAL keeps the file consistent but may
                # lose the last commits); one fsync per indexed file is small beside embedding it.
                conn.execute("PRAGMA synchronous = FULL")
        except EdgeDSEError:
            conn.close()
            raise
        except sqlite3.OperationalError as e:  # locked, busy, cannot open, disk full, ...
            conn.close()
            if "locked" in str(e) or "busy" in str(e):
                raise EdgeDSEError(
                    f"catalog {self.path} stayed busy for {BUSY_TIMEOUT_S:.0f} s ({e}): another process "
                    f"is writing it; retry when it is done"
                ) from e
            raise EdgeDSEError(f"catalog {self.path} cannot be opened ({e}): check the folder's permissions and free disk space") from e
        except sqlite3.DatabaseError as e:  # "file is not a database", "malformed", ...
            conn.close()
            raise corrupt_error(self.path, e) from e

    # -- schema ---------------------------------------------------------------------------
    def _create_schema(self) -> None:
        with self.transaction():
            version = self._meta_raw("schema_version")
            if version is not None and int(version) > SCHEMA_VERSION:
                raise EdgeDSEError(
                    f"catalog {self.path} has schema version {version}, newer than this edge_dse "
                    f"understands ({SCHEMA_VERSION}): upgrade edge_dse"
                )
            for statement in _split_sql(_SCHEMA):
                self._conn.execute(statement)
            for key, value in (("schema_version", str(SCHEMA_VERSION)), ("generation", "0"),
                               ("catalog_id", uuid.uuid4().hex)):
                self._conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _check_schema(self) -> None:
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = {"meta", "folders", "files", "chunks", "chunks_fts"} - tables
        if missing and not tables:
            # No table at all: a writer has created the file and not yet committed its schema
            # (or was killed right then). Nothing is damaged; the schema lands in one transaction.
            raise EdgeDSEError(
                f"library {self.path.parent} is still being created by another process (its catalog has no "
                f"tables yet): retry when that finishes, or index a folder into it with `edge-dse index`"
            )
        if missing:
            raise corrupt_error(self.path, f"missing tables {', '.join(sorted(missing))}")

    def _create_with_retry(self) -> None:
        """Switch a new catalog to WAL and create its schema. Two processes creating one library at
        once (two `edge-dse index` on a new folder) can meet here as SQLite's deadlock case: each
        statement reads, then asks for the write lock, and SQLite answers one of them "database is
        locked" at once instead of calling the busy handler (a wait could never end). Seen once in
        tests/test_reliability_concurrency.py's two writers, where the loser must instead get the
        writer lock's message. So retry until BUSY_TIMEOUT_S; by then the other process has made
        the schema, and nothing is left to do."""
        import time

        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                if self._meta_raw("schema_version") != str(SCHEMA_VERSION):
                    self._create_schema()
                return
            except sqlite3.OperationalError as e:
                if not ("locked" in str(e) or "busy" in str(e)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- transactions -----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE .. COMMIT, or ROLLBACK if the block raises. IMMEDIATE takes SQLite's
        write lock up front, so a transaction never fails half-way on a lock upgrade. A nested
        call joins the outer transaction (commits with it, rolls back with it)."""
        if self.readonly:
            raise EdgeDSEError(f"catalog {self.path} is open read-only: open the library without readonly to change it")
        with self._lock:
            if self._depth:
                if not self._writing:
                    raise RuntimeError("transaction() inside snapshot(): a read snapshot cannot write")
                with self._joined():
                    yield
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth, self._writing = 1, True
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                # After SQLITE_FULL or an I/O error SQLite may have rolled back already: a second
                # ROLLBACK would fail and hide the real error ("cannot rollback - no transaction").
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            finally:
                self._depth, self._writing = 0, False

    @contextmanager
    def _joined(self) -> Iterator[None]:
        """Inside an open transaction or snapshot: count the nesting, so only the outermost ends it."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees the same committed state (WAL snapshot),
        e.g. the generation and the ids/vectors it describes. Joins an open transaction."""
        with self._lock:
            if self._depth:
                with self._joined():
                    yield
                return
            self._conn.execute("BEGIN DEFERRED")
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
                self._conn.execute("COMMIT")  # ends the read transaction; nothing was written

    def _bump_generation(self) -> None:
        self._conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        # A random tag per state: (generation, state_id) names one state of the chunks even
        # across a restore from a backup, after which the same generation number can recur
        # with other contents.
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('state_id', ?)", (uuid.uuid4().hex,))

    # -- meta -----------------------------------------------------------------------------
    def _meta_raw(self, key: str) -> str | None:
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):  # a brand-new file
                return None
            raise
        return row[0] if row else None

    @property
    def generation(self) -> int:
        """Read from the database every time: another process may have committed since."""
        with self._lock:
            return int(self._meta_raw("generation") or 0)

    @property
    def state_id(self) -> str:
        """Changes with every generation bump (random): tells two states with one generation apart."""
        with self._lock:
            return self._meta_raw("state_id") or ""

    @property
    def catalog_id(self) -> str:
        """A random id made when the catalog was created: tells this catalog from a re-created one."""
        with self._lock:
            return self._meta_raw("catalog_id") or ""

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            value = self._meta_raw(key)
            return default if value is None else value

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    def delete_meta(self, key: str) -> None:
        with self.transaction():
            self._conn.execute("DELETE FROM meta WHERE key = ?", (key,))

    # -- folders --------------------------------------------------------------------------
    @staticmethod
    def skipped_key(folder: str) -> str:
        """Meta key of a folder's files of other types, counted by kind at its last sync (JSON)."""
        return f"skipped:{folder}"

    def skipped(self) -> dict[str, int]:
        """Files of other types (not indexed) in all folders, by kind, most first."""
        total: dict[str, int] = {}
        for folder in self.folders():
            for kind, n in json.loads(self.get_meta(self.skipped_key(folder)) or "{}").items():
                total[kind] = total.get(kind, 0) + n
        return dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))

    def add_folder(self, path: str) -> None:
        import time

        with self.transaction():
            self._conn.execute("INSERT OR IGNORE INTO folders (path, added_ns) VALUES (?, ?)", (str(path), time.time_ns()))

    def folders(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT path FROM folders ORDER BY path")]

    def remove_folder(self, path: str) -> int:
        """Forget a folder, its files and their chunks. Returns the number of files removed."""
        with self.transaction():
            n_chunks = self._conn.execute(
                "DELETE FROM chunks WHERE path IN (SELECT path FROM files WHERE folder = ?)", (str(path),)
            ).rowcount
            n_files = self._conn.execute("DELETE FROM files WHERE folder = ?", (str(path),)).rowcount
            self._conn.execute("DELETE FROM folders WHERE path = ?", (str(path),))
            self._conn.execute("DELETE FROM meta WHERE key = ?", (self.skipped_key(path),))
            if n_chunks:
                self._bump_generation()
        return n_files

    # -- files ----------------------------------------------------------------------------
    def file_state(self, path: str) -> FileRow | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_FILE_COLUMNS} FROM files WHERE path = ?", (str(path),)).fetchone()
        return FileRow(*row) if row else None

    def files_in(self, folder: str) -> dict[str, FileRow]:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_FILE_COLUMNS} FROM files WHERE folder = ? ORDER BY path", (str(folder),)).fetchall()
        return {r[0]: FileRow(*r) for r in rows}

    def touch_file(self, path: str, size: int, mtime_ns: int) -> None:
        """Same content, new stat (e.g. `touch`): no chunk changes, so no generation bump."""
        with self.transaction():
            self._conn.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, str(path)))

    def put_file(self, folder: str, path: str, size: int, mtime_ns: int, sha256: str,
                 chunks: Sequence[Any], vectors: np.ndarray) -> list[int]:
        """Replace a file's chunks in one transaction; returns the new chunk ids.

        chunks: objects with .start .end .text .heading; vectors: float32, one row per chunk.
        The folder row is created if missing. Bumps the generation.
        """
        path, folder = str(path), str(folder)
        with self.transaction():
            self._upsert_file(folder, path, size, mtime_ns, sha256, "ok", None, len(chunks))
            ids = self._insert_chunks(path, chunks, vectors)
        return ids

    def _upsert_file(self, folder: str, path: str, size: int | None, mtime_ns: int | None, sha256: str,
                     status: str, error: str | None, n_chunks: int) -> None:
        """A file's row, its chunks deleted (inside a transaction)."""
        self._conn.execute("INSERT OR IGNORE INTO folders (path, added_ns) VALUES (?, 0)", (folder,))
        self._conn.execute("DELETE FROM chunks WHERE path = ?", (path,))
        self._conn.execute(
            f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET folder = excluded.folder, size = excluded.size, "
            "mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256, status = excluded.status, "
            "error = excluded.error, n_chunks = excluded.n_chunks",
            (path, folder, size, mtime_ns, sha256, status, error, n_chunks),
        )

    def _insert_chunks(self, path: str, chunks: Sequence[Any], vectors: np.ndarray) -> list[int]:
        """Add chunks to a file (inside a transaction); bumps the generation."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(chunks):
            if vectors.ndim != 2 or vectors.shape[0] != len(chunks):
                raise ValueError(f"put_file({path!r}): {len(chunks)} chunks but vectors of shape {vectors.shape}")
            row = self._conn.execute("SELECT length(vector) FROM chunks WHERE path != ? LIMIT 1", (path,)).fetchone()
            if row and row[0] != vectors.shape[1] * 4:
                raise ModelMismatchError(
                    f"vectors of dim {vectors.shape[1]} for {path}, but the catalog holds dim "
                    f"{row[0] // 4}: re-index the library with one model (`edge-dse index`)"
                )
        ids = []
        for chunk, vector in zip(chunks, vectors):
            cur = self._conn.execute(
                'INSERT INTO chunks (path, "start", "end", heading, text, vector) VALUES (?, ?, ?, ?, ?, ?)',
                (path, int(chunk.start), int(chunk.end), getattr(chunk, "heading", "") or "", chunk.text, vector.tobytes()),
            )
            ids.append(cur.lastrowid)
        self._bump_generation()
        return ids

    # A large file is committed in groups of chunks (Library._embed_large). Until its last group,
    # its row holds this tag instead of its hash (so no copy reuses its chunks as complete), no
    # size (so the next sync reads it again and goes on), and says how far it got.
    @staticmethod
    def partial_tag(sha256: str) -> str:
        return f"partial:{sha256}"

    def put_partial(self, folder: str, path: str, sha256: str, chunks: Sequence[Any], vectors: np.ndarray, *,
                    total: int, first: bool) -> None:
        """Commit one group of a large file's chunks (the first group replaces its old ones)."""
        path, folder = str(path), str(folder)
        with self.transaction():
            if first:
                self._upsert_file(folder, path, None, None, self.partial_tag(sha256), "error", None, 0)
            self._insert_chunks(path, chunks, vectors)
            self._conn.execute(
                "UPDATE files SET n_chunks = n_chunks + ?, error = 'partly indexed: ' || (n_chunks + ?) || ' of ' || ? "
                "|| ' chunks (stopped mid-way: the next sync goes on)' WHERE path = ?",
                (len(chunks), len(chunks), total, path),
            )

    def finish_partial(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        """A large file's last group is in: it is a complete, ok file."""
        with self.transaction():
            self._conn.execute("UPDATE files SET size = ?, mtime_ns = ?, sha256 = ?, status = 'ok', error = NULL "
                               "WHERE path = ?", (size, mtime_ns, sha256, str(path)))

    def put_error(self, folder: str, path: str, size: int | None, mtime_ns: int | None, reason: str, *,
                  drop_chunks: bool = False) -> None:
        """Record that a file failed, with its reason. Its previously indexed chunks stay
        (a transient failure must not lose them) unless drop_chunks (a file now refused by rule:
        a symlink out of the folder, too large, not a regular file); size/mtime given as None keep
        the old ones."""
        path, folder = str(path), str(folder)
        with self.transaction():
            if drop_chunks and self._conn.execute("DELETE FROM chunks WHERE path = ?", (path,)).rowcount:
                self._conn.execute("UPDATE files SET sha256 = NULL, n_chunks = 0 WHERE path = ?", (path,))
                self._bump_generation()
            self._conn.execute("INSERT OR IGNORE INTO folders (path, added_ns) VALUES (?, 0)", (folder,))
            self._conn.execute(
                f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, NULL, 'error', ?, 0) "
                "ON CONFLICT(path) DO UPDATE SET folder = excluded.folder, "
                "size = coalesce(excluded.size, size), mtime_ns = coalesce(excluded.mtime_ns, mtime_ns), "
                "status = 'error', error = excluded.error",
                (path, folder, size, mtime_ns, str(reason)),
            )

    def remove_file(self, path: str) -> int:
        """Forget a file and its chunks; returns the number of chunks removed."""
        with self.transaction():
            n = self._conn.execute("DELETE FROM chunks WHERE path = ?", (str(path),)).rowcount
            gone = self._conn.execute("DELETE FROM files WHERE path = ?", (str(path),)).rowcount
            if n or gone:
                self._bump_generation()
        return n

    def chunks_for_hash(self, sha256: str) -> tuple[list[ChunkRow], np.ndarray] | None:
        """The chunks and vectors of an indexed file with this content, or None. Lets a
        renamed or copied file reuse them instead of being embedded again. Prefers a file
        whose status is ok; a file in error keeps chunks that still match its stored hash."""
        with self.snapshot():
            row = self._conn.execute(
                "SELECT path FROM files WHERE sha256 = ? ORDER BY status = 'ok' DESC, path LIMIT 1", (sha256,)
            ).fetchone()
            if row is None:
                return None
            rows = self._conn.execute(
                f"SELECT {_CHUNK_COLUMNS}, vector FROM chunks WHERE path = ? ORDER BY id", (row[0],)
            ).fetchall()
        return [ChunkRow(*r[:6]) for r in rows], _vectors_from_blobs([r[6] for r in rows])

    # -- chunks ---------------------------------------------------------------------------
    def get_chunks(self, ids: Sequence[int]) -> list[ChunkRow]:
        """Chunks in the order given; ids that no longer exist are skipped."""
        ids = [int(i) for i in ids]
        found: dict[int, ChunkRow] = {}
        with self.snapshot():
            for r in self._chunk_rows(_CHUNK_COLUMNS, ids):
                found[r[0]] = ChunkRow(*r)
        return [found[i] for i in ids if i in found]

    def _chunk_rows(self, columns: str, ids: list[int]) -> Iterator[tuple]:
        """`SELECT columns FROM chunks WHERE id IN ids`, asked in batches of _IN_BATCH ids (SQLite
        caps the number of `?` in one statement). Call it inside a snapshot, so the batches agree."""
        for lo in range(0, len(ids), _IN_BATCH):
            batch = ids[lo : lo + _IN_BATCH]
            yield from self._conn.execute(f"SELECT {columns} FROM chunks WHERE id IN ({','.join('?' * len(batch))})", batch)

    def get_vectors(self, ids: Sequence[int]) -> np.ndarray:
        """float32 vectors, one row per id in the order given. An id that no longer exists (a
        writer removed it since the caller listed it) gets a zero row, so rows stay aligned
        with the caller's ids and such a chunk scores 0 against any query."""
        ids = [int(i) for i in ids]
        blobs: dict[int, bytes] = {}
        with self.snapshot():
            blobs.update(self._chunk_rows("id, vector", ids))
            if len(blobs) < len(set(ids)):
                any_row = next(iter(blobs.values()), None)
                if any_row is None:
                    any_row = (self._conn.execute("SELECT vector FROM chunks LIMIT 1").fetchone() or [b""])[0]
                zero = bytes(len(any_row))
                return _vectors_from_blobs([blobs.get(i, zero) for i in ids]) if ids else _vectors_from_blobs([])
        return _vectors_from_blobs([blobs[i] for i in ids])

    def all_ids(self) -> np.ndarray:
        with self._lock:
            cur = self._conn.execute("SELECT id FROM chunks ORDER BY id")
            return np.fromiter((r[0] for r in cur), dtype=np.int64)

    def iter_vectors(self, batch: int = 10000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64, vectors float32) in id order, `batch` rows at a time (keyset paging, so
        memory stays bounded). Wrap in snapshot() to see one consistent state throughout."""
        last = -1
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT id, vector FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield np.array([r[0] for r in rows], dtype=np.int64), _vectors_from_blobs([r[1] for r in rows])

    # -- keyword search -------------------------------------------------------------------
    def keyword_search(self, query: str, k: int) -> list[tuple[int, float]]:
        """BM25 keyword search over chunk text and heading: [(chunk_id, score)], best first,
        score = -bm25 (higher = better), by the policy of `keyword_ranked`."""
        return keyword_ranked(self._fts, query, k)

    def _fts(self, match: str, k: int) -> list[tuple[int, float]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT rowid, bm25(chunks_fts) AS rank FROM chunks_fts WHERE chunks_fts MATCH ? "
                "ORDER BY rank LIMIT ?",
                (match, int(k)),
            ).fetchall()
        return [(int(cid), float(-score)) for cid, score in rows]

    # -- reporting ------------------------------------------------------------------------
    def counts(self) -> dict:
        with self.snapshot():
            one = lambda sql: self._conn.execute(sql).fetchone()[0]  # noqa: E731
            return {
                "folders": one("SELECT count(*) FROM folders"),
                "files": one("SELECT count(*) FROM files"),
                "chunks": one("SELECT count(*) FROM chunks"),
                "errors": one("SELECT count(*) FROM files WHERE status = 'error'"),
            }

    def errors(self, limit: int | None = None) -> list[tuple[str, str]]:
        """(path, reason) of failed files, by path; the first `limit` of them when given."""
        with self._lock:
            return [(p, e or "") for p, e in self._conn.execute(
                "SELECT path, error FROM files WHERE status = 'error' ORDER BY path LIMIT ?",
                (-1 if limit is None else int(limit),))]

    def error_kinds(self) -> dict[str, int]:
        """Failed files counted by the kind of their reason ("empty", "too large", ...: the
        reason up to its first ":" or " ("), most first."""
        kinds: dict[str, int] = {}
        with self._lock:
            for (reason,) in self._conn.execute("SELECT error FROM files WHERE status = 'error'"):
                kind = re.split(r":| \(", reason or "unknown", maxsplit=1)[0]
                kinds[kind] = kinds.get(kind, 0) + 1
        return dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))

    def free_fraction(self) -> float:
        """The share of the file's pages that deletions left empty (SQLite reuses them, but
        the file never shrinks by itself)."""
        with self._lock:
            pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
            free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        return free / pages if pages else 0.0

    def optimize_keywords(self) -> None:
        """Merge the FTS5 index into one segment. Deleting a chunk only adds a "delete" entry to
        the keyword index: its old entries stay on disk until the segments are merged (a removed
        folder's text kept megabytes for 3 live chunks). Costs a rewrite of the keyword index:
        done after a folder is removed, and before a VACUUM, not after every sync."""
        with self.transaction():
            self._conn.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('optimize')")

    def reclaim_space(self, threshold: float = RECLAIM_FRACTION) -> bool:
        """VACUUM when more than `threshold` of the file is free pages; returns whether it did.
        The caller holds the writer lock; WAL readers keep reading through it."""
        if self.readonly or self._depth or self.free_fraction() <= threshold:
            return False
        self.optimize_keywords()  # its dead entries become free pages too, for the VACUUM to drop
        with self._lock:
            self._conn.execute("VACUUM")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return True

    def close(self) -> None:
        with self._lock:
            self._conn.close()  # idempotent; later use raises sqlite3.ProgrammingError (closed)

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r}{', readonly=True' if self.readonly else ''})"


def _split_sql(script: str) -> list[str]:
    """Split the schema into statements (executescript would COMMIT our transaction first).
    Trigger bodies hold ';' too, so split on the ones that end a statement: at line end,
    outside a BEGIN .. END block."""
    statements, current, in_trigger = [], [], False
    for line in script.splitlines():
        if line.strip().startswith("--") or not line.strip():
            continue
        current.append(line)
        stripped = line.strip().upper()
        if stripped.startswith("CREATE TRIGGER"):
            in_trigger = True
        if stripped.endswith(";") and (not in_trigger or stripped == "END;"):
            statements.append("\n".join(current))
            current, in_trigger = [], False
    return statements
