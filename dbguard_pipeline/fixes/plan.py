"""A migration before it is written: ordered blocks of statements for the forward and the rollback file,
plus the header (what, why, how to apply). Rendering is deterministic: the same plan gives the same bytes;
the only timestamp is in the file name.

File layout (both files): a header of ``--`` comments, ``SET lock_timeout`` and ``SET statement_timeout``,
then blocks. A transactional block is written as ``BEGIN; ... COMMIT;`` so psql and the Supabase CLI apply
the file as it is; a non-transactional step (CREATE/DROP INDEX CONCURRENTLY, a batched backfill that commits
per batch) is a single statement preceded by the marker line ``-- dbguard:no-transaction`` and is never
inside BEGIN/COMMIT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from dbguard_pipeline.fixes.sql import FIXES_PREFIX, NO_TRANSACTION_MARKER, file_slug
from dbguard_pipeline.text import escape_controls, quoted_qname

ACTIONS = ("add-tenant-isolation", "fix-rls-policy", "add-composite-index", "add-foreign-key", "optimize-policy")


@dataclass(frozen=True)
class Block:
    statements: tuple[str, ...]
    transactional: bool = True
    comment: Optional[str] = None
    # Non-transactional steps only. "statement": no statement_timeout for this step (a batched backfill or an
    # index build takes as long as the table needs); "all": no lock_timeout either: CONCURRENTLY never blocks
    # reads or writes while it waits for older transactions, and a lock_timeout there would only leave an
    # INVALID index behind. The file's timeouts are set again right after the step.
    untimed: Optional[str] = None

    def render(self, lock_timeout_ms: int = 2_000, statement_timeout_ms: int = 60_000) -> str:
        out: list[str] = []
        if self.comment:
            out.extend(f"-- {escape_controls(line)}" for line in self.comment.splitlines())
        if self.transactional:
            out.append("BEGIN;")
            out.extend(_stmt(s) for s in self.statements)
            out.append("COMMIT;")
            return "\n".join(out)
        if self.untimed:
            out.append("SET statement_timeout = 0;")
            if self.untimed == "all":
                out.append("SET lock_timeout = 0;")
        for s in self.statements:
            out.append(NO_TRANSACTION_MARKER)
            out.append(_stmt(s))
        if self.untimed:
            if self.untimed == "all":
                out.append(f"SET lock_timeout = '{int(lock_timeout_ms)}ms';")
            out.append(f"SET statement_timeout = '{int(statement_timeout_ms)}ms';")
        return "\n".join(out)


def _stmt(s: str) -> str:
    s = s.strip()
    return s if s.endswith(";") else s + ";"


@dataclass
class Migration:
    action: str
    schema: str
    table: str
    what: list[str] = field(default_factory=list)  # what the forward file does, one line each
    why: list[str] = field(default_factory=list)  # the findings (or the detected problem), one line each
    fixes: list[str] = field(default_factory=list)  # finding cache keys this migration resolves
    forward: list[Block] = field(default_factory=list)
    rollback: list[Block] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    undo: list[str] = field(default_factory=list)  # what the rollback file does
    params: dict[str, Any] = field(
        default_factory=dict
    )  # what the planner was asked (re-planning it must find nothing)
    lock_timeout_ms: int = 2_000
    statement_timeout_ms: int = 60_000
    verdicts: list[str] = field(default_factory=list)  # the round trip's three verdicts, one line each
    rejected: Optional[str] = None  # why the round trip failed it (written to rejected/, never applied)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.action, self.schema, self.table)

    def stem(self, timestamp: str) -> str:
        target = self.table if self.schema == "public" else f"{self.schema}_{self.table}"
        return f"{timestamp}_{self.action.replace('-', '_')}_{file_slug(target)}"

    def file_names(self, timestamp: str) -> tuple[str, str]:
        stem = self.stem(timestamp)
        return f"{stem}.sql", f"{stem}_rollback.sql"

    # ------------------------------------------------------------------ rendering
    def _settings(self) -> list[str]:
        return [
            f"SET lock_timeout = '{int(self.lock_timeout_ms)}ms';",
            f"SET statement_timeout = '{int(self.statement_timeout_ms)}ms';",
        ]

    def render_forward(self) -> str:
        head = [
            f"-- dbguard migration: {self.action} on {escape_controls(quoted_qname(self.schema, self.table))}",
            "--",
            "-- What:",
        ]
        head += [f"--   - {escape_controls(w)}" for w in self.what]
        head += ["-- Why:"]
        head += [f"--   - {escape_controls(w)}" for w in (self.why or ["requested explicitly"])]
        for note in self.notes:
            head.append(f"-- Note: {escape_controls(note)}")
        if self.verdicts:
            head.append("-- Verdicts of the round trip on a scratch copy:")
            head += [f"--   {escape_controls(v)}" for v in self.verdicts]
        if self.rejected:
            head.append(f"-- REJECTED (do not apply): {escape_controls(self.rejected)}")
        head += [
            "-- How to apply (the file manages its own transactions; never wrap it in one):",
            "--   dbguard migrate up --dir <this folder>     ledger, checksum, automatic rollback on failure",
            "--   psql -v ON_ERROR_STOP=1 -f <this file>",
            "--   supabase migration up / db push            (CLI 2.109+ runs CONCURRENTLY steps on their own)",
            "-- Undo: the *_rollback.sql file with the same name (dbguard migrate rollback <name>).",
            f'-- A statement after "{NO_TRANSACTION_MARKER}" runs outside any transaction block.',
        ]
        head += [f"{FIXES_PREFIX}{escape_controls(k)}" for k in sorted(set(self.fixes))]
        return self._render(head, self.forward)

    def render_rollback(self) -> str:
        head = [
            f"-- dbguard rollback: undoes {self.action} on {escape_controls(quoted_qname(self.schema, self.table))}",
            "--",
            "-- What:",
        ]
        head += [f"--   - {escape_controls(w)}" for w in self.undo]
        head += [
            "-- Restores the state the forward file found: dropped policies are recreated with their original",
            "-- roles, command, permissive flag and expressions; RLS flags as they were; added objects dropped.",
            "-- Every step is guarded (IF EXISTS), so it also cleans up after a forward run that failed half way.",
            "-- How to apply: dbguard migrate rollback <name>, or psql -v ON_ERROR_STOP=1 -f <this file>",
        ]
        return self._render(head, self.rollback)

    def _render(self, head: list[str], blocks: list[Block]) -> str:
        parts = ["\n".join(head), "\n".join(self._settings())]
        parts += [b.render(self.lock_timeout_ms, self.statement_timeout_ms) for b in blocks]
        return "\n\n".join(parts) + "\n"


def read_fixes(text: str) -> list[str]:
    """The finding cache keys a migration file says it fixes (its ``-- dbguard:fixes`` header lines)."""
    return [line[len(FIXES_PREFIX) :].strip() for line in text.splitlines() if line.startswith(FIXES_PREFIX)]
