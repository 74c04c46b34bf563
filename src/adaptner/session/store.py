"""The annotation-session store: one SQLite database (WAL mode) with a versioned schema."""

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AdaptnerError
from ..util import writing

#: Schema migrations, in order: migration i (1-based) brings the store to version i.
#: Published migrations never change; a schema change is a new entry at the end.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        source TEXT NOT NULL,
        pool_path TEXT NOT NULL,
        heldout_path TEXT,
        strategy TEXT NOT NULL,
        strategy_params TEXT NOT NULL,
        labels TEXT NOT NULL,
        lang TEXT NOT NULL,
        seed INTEGER NOT NULL,
        session_dir TEXT NOT NULL,
        settings TEXT NOT NULL
    );
    CREATE TABLE pool (
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        input_hash INTEGER NOT NULL,
        text TEXT NOT NULL,
        tokens TEXT NOT NULL,
        domain TEXT,
        source TEXT,
        PRIMARY KEY (session_id, input_hash)
    );
    CREATE UNIQUE INDEX pool_by_idx ON pool(session_id, idx);
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        round INTEGER NOT NULL,
        created_at REAL NOT NULL,
        path TEXT NOT NULL,
        copy_path TEXT NOT NULL,
        format TEXT NOT NULL,
        n INTEGER NOT NULL,
        strategy TEXT NOT NULL,
        seconds REAL
    );
    CREATE TABLE handouts (
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        batch_id INTEGER NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
        input_hash INTEGER NOT NULL,
        task_hash INTEGER NOT NULL,
        rank INTEGER NOT NULL,
        score REAL,
        PRIMARY KEY (session_id, batch_id, input_hash)
    );
    CREATE INDEX handouts_by_input ON handouts(session_id, input_hash);
    CREATE TABLE imports (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        file TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        n_lines INTEGER NOT NULL,
        n_new INTEGER NOT NULL,
        n_replaced INTEGER NOT NULL,
        n_duplicate INTEGER NOT NULL,
        n_stale INTEGER NOT NULL,
        n_invalid INTEGER NOT NULL
    );
    CREATE TABLE answers (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        import_id INTEGER NOT NULL REFERENCES imports(id) ON DELETE CASCADE,
        line INTEGER NOT NULL,
        input_hash INTEGER NOT NULL,
        task_hash INTEGER NOT NULL,
        answer_hash INTEGER NOT NULL,
        answer TEXT NOT NULL CHECK (answer IN ('accept', 'reject', 'ignore')),
        text TEXT NOT NULL,
        tokens TEXT NOT NULL,
        spans TEXT NOT NULL,
        timestamp INTEGER,
        task TEXT NOT NULL,
        current INTEGER NOT NULL DEFAULT 1,
        trained_round INTEGER
    );
    CREATE UNIQUE INDEX answers_one_current ON answers(session_id, input_hash) WHERE current = 1;
    CREATE INDEX answers_by_input ON answers(session_id, input_hash);
    CREATE TABLE rounds (
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        round INTEGER NOT NULL,
        created_at REAL NOT NULL,
        mode TEXT NOT NULL,
        model_dir TEXT NOT NULL,
        n_train INTEGER NOT NULL,
        metrics TEXT NOT NULL,
        PRIMARY KEY (session_id, round)
    );
    """,
    # 2: the held-out (evaluation) texts, by the hash of their whitespace-normalised text,
    # so that `import` can refuse answers for them even if the held-out file moves.
    """
    CREATE TABLE heldout (
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        norm_hash INTEGER NOT NULL,
        PRIMARY KEY (session_id, norm_hash)
    );
    """,
    # 3: the newest finished round when a batch was made; ``round`` is the round whose model
    # made it, an earlier one when the newest scored below the source (NULL: same as round).
    """
    ALTER TABLE batches ADD COLUMN newest_round INTEGER;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)

#: How long a writer waits for another writer's transaction (ms) before giving up.
BUSY_TIMEOUT_MS = 60_000


@dataclass
class Session:
    """A session's settings as stored at ``init``."""

    id: int
    name: str
    created_at: float
    source: str
    pool_path: str
    heldout_path: str | None
    strategy: str
    strategy_params: dict[str, Any]
    labels: list[str]
    lang: str
    seed: int
    session_dir: str
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Session":
        """A ``sessions`` row, with its JSON columns decoded."""
        return cls(
            id=row["id"],
            name=row["name"],
            created_at=row["created_at"],
            source=row["source"],
            pool_path=row["pool_path"],
            heldout_path=row["heldout_path"],
            strategy=row["strategy"],
            strategy_params=json.loads(row["strategy_params"]),
            labels=json.loads(row["labels"]),
            lang=row["lang"],
            seed=row["seed"],
            session_dir=row["session_dir"],
            settings=json.loads(row["settings"]),
        )


@dataclass
class RoundInfo:
    """One trained round (round 0 is the source pipeline)."""

    round: int
    created_at: float
    mode: str
    model_dir: str
    n_train: int
    metrics: dict[str, Any]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "RoundInfo":
        """A ``rounds`` row, with its metrics decoded."""
        return cls(
            round=row["round"],
            created_at=row["created_at"],
            mode=row["mode"],
            model_dir=row["model_dir"],
            n_train=row["n_train"],
            metrics=json.loads(row["metrics"]),
        )


@dataclass
class StoredAnswer:
    """The current answer for one input."""

    id: int
    input_hash: int
    task_hash: int
    answer_hash: int
    answer: str
    text: str
    tokens: list[tuple[int, int]]
    spans: list[tuple[int, int, str]]
    timestamp: int | None
    task: dict[str, Any]
    trained_round: int | None
    domain: str | None = None
    source: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "StoredAnswer":
        """An ``answers`` row joined with its pool row (``domain``, ``psource``)."""
        return cls(
            id=row["id"],
            input_hash=row["input_hash"],
            task_hash=row["task_hash"],
            answer_hash=row["answer_hash"],
            answer=row["answer"],
            text=row["text"],
            tokens=[tuple(t) for t in json.loads(row["tokens"])],
            spans=[tuple(s) for s in json.loads(row["spans"])],
            timestamp=row["timestamp"],
            task=json.loads(row["task"]),
            trained_round=row["trained_round"],
            domain=row["domain"],
            source=row["psource"],
        )


class SessionStore:
    """Access to the session database.

    Every write runs in one ``BEGIN IMMEDIATE`` transaction (:meth:`write`), so a killed
    process leaves the store as it was before the command, and concurrent writers wait for
    each other instead of interleaving. The journal is in WAL mode, so readers never block.
    """

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        """Open (or, with ``create``, create) the store at ``path`` and migrate its schema.

        Raises:
            AdaptnerError: no store at ``path`` (without ``create``), a file that is not a
                session store, or a store written by a newer adaptner.
        """
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise AdaptnerError(
                f"No session store at {self.path}. Create a session with "
                "`adaptner session init` (or pass --db)."
            )
        if self.path.is_dir():
            raise AdaptnerError(f"Session store {self.path} is a directory; --db takes a file.")
        existed = self.path.exists()
        try:
            with writing(self.path):  # a full disk or a read-only store: said as such
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(
                    str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
                )
                self.conn.row_factory = sqlite3.Row
                self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise AdaptnerError(f"Cannot switch {self.path} to WAL mode (got {mode}).")
                self.conn.execute("PRAGMA synchronous = FULL")
                self.conn.execute("PRAGMA foreign_keys = ON")
                self._migrate()
        except BaseException as e:
            if not existed:  # leave no empty store behind
                if getattr(self, "conn", None) is not None:
                    self.conn.close()
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            if isinstance(e, sqlite3.DatabaseError):
                raise AdaptnerError(
                    f"{self.path} is not a session store or is corrupt ({e}). Pass the right "
                    "file with --db."
                ) from e
            raise

    # --- plumbing ---------------------------------------------------------------
    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> "SessionStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block succeeds, rolled back otherwise.

        Raises:
            AdaptnerError: the disk is full or the store read-only (named).
        """
        with writing(self.path):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:  # also when COMMIT failed (a full disk)
                    self.conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One consistent read snapshot (a deferred transaction)."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            self.conn.execute("COMMIT")

    def schema_version(self) -> int:
        """The schema version the store is at."""
        row = self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _migrate(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            current = self.schema_version()
            if current > len(MIGRATIONS):
                raise AdaptnerError(
                    f"Session store {self.path} has schema version {current}, but this "
                    f"adaptner knows only up to {len(MIGRATIONS)}. Upgrade adaptner."
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in _split_sql(MIGRATIONS[version - 1]):
                    self.conn.execute(statement)
                self.conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # --- sessions ---------------------------------------------------------------
    def session_names(self) -> list[str]:
        """Names of every session in the store."""
        return [r[0] for r in self.conn.execute("SELECT name FROM sessions ORDER BY name")]

    def find_session(self, name: str) -> Session | None:
        """The session called ``name``, or None."""
        row = self.conn.execute("SELECT * FROM sessions WHERE name = ?", (name,)).fetchone()
        return None if row is None else Session.from_row(row)

    def get_session(self, name: str) -> Session:
        """The session called ``name``.

        Raises:
            AdaptnerError: no such session (the message lists the ones that exist).
        """
        session = self.find_session(name)
        if session is None:
            names = self.session_names()
            known = ", ".join(names) if names else "none yet"
            raise AdaptnerError(
                f"No session {name!r} in {self.path} (sessions: {known}). Create it with "
                "`adaptner session init`."
            )
        return session

    def create_session(
        self,
        conn: sqlite3.Connection,
        *,
        name: str,
        source: str,
        pool_path: str,
        heldout_path: str | None,
        strategy: str,
        strategy_params: dict[str, Any],
        labels: Sequence[str],
        lang: str,
        seed: int,
        session_dir: str,
        settings: dict[str, Any],
    ) -> int:
        """Insert a session row inside the write transaction ``conn``; returns its id."""
        cur = conn.execute(
            "INSERT INTO sessions (name, created_at, source, pool_path, heldout_path, strategy, "
            "strategy_params, labels, lang, seed, session_dir, settings) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                time.time(),
                source,
                pool_path,
                heldout_path,
                strategy,
                json.dumps(strategy_params, sort_keys=True),
                json.dumps(list(labels)),
                lang,
                seed,
                session_dir,
                json.dumps(settings, sort_keys=True),
            ),
        )
        return int(cur.lastrowid)

    # --- pool -------------------------------------------------------------------
    def add_pool(
        self,
        conn: sqlite3.Connection,
        session_id: int,
        rows: Sequence[tuple[int, int, str, list[tuple[int, int]], str | None, str | None]],
    ) -> None:
        """Insert pool rows ``(idx, input_hash, text, tokens, domain, source)``."""
        conn.executemany(
            "INSERT INTO pool (session_id, idx, input_hash, text, tokens, domain, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (session_id, idx, h, text, json.dumps(tokens), domain, source)
                for idx, h, text, tokens, domain, source in rows
            ],
        )

    def pool_size(self, session_id: int) -> int:
        """Number of pool sentences."""
        return self.conn.execute(
            "SELECT COUNT(*) FROM pool WHERE session_id = ?", (session_id,)
        ).fetchone()[0]

    def pool_tokens(self, session_id: int) -> dict[int, tuple[str, list[tuple[int, int]]]]:
        """input_hash -> (text, token offsets) for every pool sentence."""
        out = {}
        for row in self.conn.execute(
            "SELECT input_hash, text, tokens FROM pool WHERE session_id = ?", (session_id,)
        ):
            out[row[0]] = (row[1], [tuple(t) for t in json.loads(row[2])])
        return out

    def candidates(self, session_id: int, *, reissue: bool = False) -> list[sqlite3.Row]:
        """Pool rows not answered yet and (unless ``reissue``) not handed out and pending."""
        sql = (
            "SELECT p.idx, p.input_hash, p.text, p.tokens, p.domain, p.source FROM pool p "
            "WHERE p.session_id = ? AND NOT EXISTS (SELECT 1 FROM answers a WHERE "
            "a.session_id = p.session_id AND a.input_hash = p.input_hash AND a.current = 1)"
        )
        if not reissue:
            sql += (
                " AND NOT EXISTS (SELECT 1 FROM handouts h WHERE h.session_id = p.session_id "
                "AND h.input_hash = p.input_hash)"
            )
        return list(self.conn.execute(sql + " ORDER BY p.idx", (session_id,)))

    # --- held-out texts -----------------------------------------------------------
    def add_heldout(
        self, conn: sqlite3.Connection, session_id: int, norm_hashes: Sequence[int]
    ) -> None:
        """Record the held-out texts (hashes of their whitespace-normalised text)."""
        conn.executemany(
            "INSERT OR IGNORE INTO heldout (session_id, norm_hash) VALUES (?, ?)",
            [(session_id, h) for h in norm_hashes],
        )

    def heldout_hashes(self, session_id: int) -> set[int]:
        """The recorded held-out text hashes (see :meth:`add_heldout`)."""
        return {
            r[0]
            for r in self.conn.execute(
                "SELECT norm_hash FROM heldout WHERE session_id = ?", (session_id,)
            )
        }

    # --- batches ----------------------------------------------------------------
    def add_batch(
        self,
        conn: sqlite3.Connection,
        session_id: int,
        *,
        round: int,
        path: str,
        copy_path: str,
        format: str,
        strategy: str,
        handouts: Sequence[tuple[int, int, int, float | None]],
        seconds: float | None = None,
        newest_round: int | None = None,
    ) -> int:
        """Record a batch and its handouts ``(input_hash, task_hash, rank, score)``.

        ``round`` is the round whose model made the batch; ``newest_round`` the newest
        finished round at the time (None: the same)."""
        cur = conn.execute(
            "INSERT INTO batches (session_id, round, created_at, path, copy_path, format, n, "
            "strategy, seconds, newest_round) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                session_id,
                round,
                time.time(),
                path,
                copy_path,
                format,
                len(handouts),
                strategy,
                seconds,
                round if newest_round is None else newest_round,
            ),
        )
        batch_id = int(cur.lastrowid)
        conn.executemany(
            "INSERT INTO handouts (session_id, batch_id, input_hash, task_hash, rank, score) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(session_id, batch_id, h, th, rank, score) for h, th, rank, score in handouts],
        )
        return batch_id

    def next_batch_id(self, conn: sqlite3.Connection) -> int:
        """The id the next batch will get (call inside the write transaction)."""
        row = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM batches").fetchone()
        return int(row[0])

    def batches(self, session_id: int) -> list[sqlite3.Row]:
        """Every batch of a session, oldest first."""
        return list(
            self.conn.execute(
                "SELECT * FROM batches WHERE session_id = ? ORDER BY id", (session_id,)
            )
        )

    def handed_out(self, session_id: int) -> dict[int, int]:
        """input_hash -> task_hash of every text handed out (the latest batch wins)."""
        return {
            r[0]: r[1]
            for r in self.conn.execute(
                "SELECT input_hash, task_hash FROM handouts WHERE session_id = ? ORDER BY batch_id",
                (session_id,),
            )
        }

    def outstanding(self, session_id: int, batch_id: int | None = None) -> int:
        """Inputs handed out (in ``batch_id``, or in any batch) without an answer yet."""
        sql = (
            "SELECT COUNT(DISTINCT h.input_hash) FROM handouts h WHERE h.session_id = ? "
            "AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.session_id = h.session_id "
            "AND a.input_hash = h.input_hash AND a.current = 1)"
        )
        args: tuple = (session_id,)
        if batch_id is not None:
            sql += " AND h.batch_id = ?"
            args = (session_id, batch_id)
        return self.conn.execute(sql, args).fetchone()[0]

    # --- answers ----------------------------------------------------------------
    def current_answer(self, conn: sqlite3.Connection, session_id: int, input_hash: int):
        """The current answer row for an input (inside a transaction), or None."""
        return conn.execute(
            "SELECT id, answer_hash, timestamp FROM answers "
            "WHERE session_id = ? AND input_hash = ? AND current = 1",
            (session_id, input_hash),
        ).fetchone()

    def supersede(self, conn: sqlite3.Connection, answer_id: int) -> None:
        """Mark an answer as replaced by a newer one."""
        conn.execute("UPDATE answers SET current = 0 WHERE id = ?", (answer_id,))

    def insert_answer(
        self, conn: sqlite3.Connection, session_id: int, import_id: int, record: dict[str, Any]
    ) -> None:
        """Insert one answer (the current one for its input)."""
        conn.execute(
            "INSERT INTO answers (session_id, import_id, line, input_hash, task_hash, "
            "answer_hash, answer, text, tokens, spans, timestamp, task, current) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (
                session_id,
                import_id,
                record["line"],
                record["input_hash"],
                record["task_hash"],
                record["answer_hash"],
                record["answer"],
                record["text"],
                json.dumps(record["tokens"]),
                json.dumps(record["spans"], ensure_ascii=False),
                record["timestamp"],
                json.dumps(record["task"], ensure_ascii=False, sort_keys=True),
            ),
        )

    def start_import(
        self, conn: sqlite3.Connection, session_id: int, file: str, sha256: str
    ) -> int:
        """Insert an import log row (counts filled by :meth:`finish_import`)."""
        cur = conn.execute(
            "INSERT INTO imports (session_id, created_at, file, sha256, n_lines, n_new, "
            "n_replaced, n_duplicate, n_stale, n_invalid) VALUES (?, ?, ?, ?, 0, 0, 0, 0, 0, 0)",
            (session_id, time.time(), file, sha256),
        )
        return int(cur.lastrowid)

    def finish_import(
        self, conn: sqlite3.Connection, import_id: int, counts: dict[str, int]
    ) -> None:
        """Store an import's counts."""
        conn.execute(
            "UPDATE imports SET n_lines = ?, n_new = ?, n_replaced = ?, n_duplicate = ?, "
            "n_stale = ?, n_invalid = ? WHERE id = ?",
            (
                counts["lines"],
                counts["new"],
                counts["replaced"],
                counts["duplicate"],
                counts["stale"],
                counts["invalid"],
                import_id,
            ),
        )

    def answers(
        self, session_id: int, *, answer: str | None = None, trained: bool | None = None
    ) -> list[StoredAnswer]:
        """Current answers (optionally one kind; optionally only (un)trained ones), by id."""
        sql = (
            "SELECT a.*, p.domain AS domain, p.source AS psource FROM answers a "
            "LEFT JOIN pool p ON p.session_id = a.session_id AND p.input_hash = a.input_hash "
            "WHERE a.session_id = ? AND a.current = 1"
        )
        args: list[Any] = [session_id]
        if answer is not None:
            sql += " AND a.answer = ?"
            args.append(answer)
        if trained is True:
            sql += " AND a.trained_round IS NOT NULL"
        elif trained is False:
            sql += " AND a.trained_round IS NULL"
        return [
            StoredAnswer.from_row(row) for row in self.conn.execute(sql + " ORDER BY a.id", args)
        ]

    def mark_trained(self, conn: sqlite3.Connection, answer_ids: Sequence[int], round: int) -> None:
        """Record that these answers went into round ``round``."""
        conn.executemany(
            "UPDATE answers SET trained_round = ? WHERE id = ?",
            [(round, i) for i in answer_ids],
        )

    # --- rounds -----------------------------------------------------------------
    def add_round(
        self,
        conn: sqlite3.Connection,
        session_id: int,
        *,
        round: int,
        mode: str,
        model_dir: str,
        n_train: int,
        metrics: dict[str, Any],
    ) -> None:
        """Record a trained round; its model becomes the current one."""
        conn.execute(
            "INSERT INTO rounds (session_id, round, created_at, mode, model_dir, n_train, "
            "metrics) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (session_id, round, time.time(), mode, model_dir, n_train, json.dumps(metrics)),
        )

    def rounds(self, session_id: int) -> list[RoundInfo]:
        """Every round, round 0 (the source pipeline) first."""
        rows = self.conn.execute(
            "SELECT * FROM rounds WHERE session_id = ? ORDER BY round", (session_id,)
        )
        return [RoundInfo.from_row(r) for r in rows]

    def current_round(self, session_id: int, conn: sqlite3.Connection | None = None) -> RoundInfo:
        """The latest round (its model is the current one)."""
        conn = conn or self.conn
        r = conn.execute(
            "SELECT * FROM rounds WHERE session_id = ? ORDER BY round DESC LIMIT 1", (session_id,)
        ).fetchone()
        if r is None:
            raise AdaptnerError("The session has no model (round 0 is missing); re-run init.")
        return RoundInfo.from_row(r)

    # --- counts -----------------------------------------------------------------
    def counts(self, session_id: int) -> dict[str, int]:
        """Status counts: pool, handed out, outstanding, answered by kind, replaced, remaining."""
        q = self.conn.execute
        pool = self.pool_size(session_id)
        handed_out = q(
            "SELECT COUNT(DISTINCT input_hash) FROM handouts WHERE session_id = ?", (session_id,)
        ).fetchone()[0]
        by_answer = dict(
            q(
                "SELECT answer, COUNT(*) FROM answers WHERE session_id = ? AND current = 1 "
                "GROUP BY answer",
                (session_id,),
            ).fetchall()
        )
        replaced = q(
            "SELECT COUNT(*) FROM answers WHERE session_id = ? AND current = 0", (session_id,)
        ).fetchone()[0]
        answered_in_pool = q(
            "SELECT COUNT(*) FROM answers a JOIN pool p ON p.session_id = a.session_id AND "
            "p.input_hash = a.input_hash WHERE a.session_id = ? AND a.current = 1",
            (session_id,),
        ).fetchone()[0]
        outstanding = self.outstanding(session_id)
        answered = sum(by_answer.values())
        return {
            "pool": pool,
            "handed_out": handed_out,
            "outstanding": outstanding,
            "answered": answered,
            "accepted": by_answer.get("accept", 0),
            "rejected": by_answer.get("reject", 0),
            "ignored": by_answer.get("ignore", 0),
            "replaced": replaced,
            "outside_pool": answered - answered_in_pool,
            "remaining": pool - answered_in_pool - outstanding,
            "batches": q(
                "SELECT COUNT(*) FROM batches WHERE session_id = ?", (session_id,)
            ).fetchone()[0],
            "imports": q(
                "SELECT COUNT(*) FROM imports WHERE session_id = ?", (session_id,)
            ).fetchone()[0],
        }


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (no semicolons inside our statements)."""
    return [s.strip() for s in script.split(";") if s.strip()]
