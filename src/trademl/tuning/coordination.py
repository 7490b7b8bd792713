"""What the workers of one study agree on, in the study's own database.

Optuna's RDB storage shares the trials; two small tables beside Optuna's (``trademl_tune_*``)
make the rest exact whatever the number of ``trademl tune`` processes and machines:

* **slots**: a worker claims trial slot ``k`` (the smallest free one below ``tune.n_trials``)
  by inserting ``(study, k)`` under a primary key before it asks Optuna for a trial, then binds
  the slot to the trial's number: the study gets exactly N trials (Optuna's
  ``MaxTrialsCallback`` counts, then starts, and can overshoot by one trial per worker). A slot
  claimed but never bound (its worker died before asking) is claimed again after a grace period;
* **parents**: the first worker to insert the study's row creates its MLflow parent run, the
  others wait for its id (the row is removed again if creating the run fails); the study is
  summarised once all N slots are bound and their trials finished, by the one worker that
  takes the summary (released again if writing it fails).

Rows are keyed by the study's name and Optuna id (``name#id``): a study deleted and created
again under the same name starts afresh.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime

from trademl.errors import TrackingError

__all__ = ["StudyCoordinator"]


class StudyCoordinator:
    """Slots, the parent run and the summary of study ``study_name`` in ``storage_url``."""

    def __init__(self, storage_url: str, study_name: str, *, engine_kwargs=None) -> None:
        import sqlalchemy as sa

        self.study_name = study_name
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.engine = sa.create_engine(storage_url, **(engine_kwargs or {}))
        meta = sa.MetaData()
        self.slots = sa.Table(
            "trademl_tune_slots",
            meta,
            sa.Column("study_name", sa.String(512), primary_key=True),
            sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("worker", sa.String(300)),
            sa.Column("claimed_at", sa.DateTime),
            sa.Column("trial_number", sa.Integer, nullable=True),
        )
        self.parents = sa.Table(
            "trademl_tune_parents",
            meta,
            sa.Column("study_name", sa.String(512), primary_key=True),
            sa.Column("parent_run_id", sa.String(64)),
            sa.Column("experiment_id", sa.String(64)),
            sa.Column("summarised_by", sa.String(300)),
            sa.Column("summarised_trials", sa.Integer),
        )
        for attempt in range(5):  # workers starting together may race to create them
            try:
                meta.create_all(self.engine, checkfirst=True)
                break
            except sa.exc.SQLAlchemyError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _retry(self, fn: Callable):
        """``fn`` in a transaction, again while sqlite says it is locked."""
        import sqlalchemy as sa

        delay = 0.05
        for _ in range(200):
            try:
                with self.engine.begin() as conn:
                    return fn(conn)
            except sa.exc.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise TrackingError(f"study {self.study_name}: its database stayed locked")

    def _slots(self) -> dict[int, tuple]:
        import sqlalchemy as sa

        c = self.slots.c
        rows = self._retry(
            lambda conn: conn.execute(
                sa.select(c.slot, c.trial_number, c.claimed_at).where(
                    c.study_name == self.study_name
                )
            ).all()
        )
        return {int(r[0]): (r[1], r[2]) for r in rows}

    def bound(self) -> int:
        """Slots bound to a trial."""
        return sum(trial is not None for trial, _ in self._slots().values())

    def claim(self, n_trials: int, stale_after: float) -> int | None:
        """The smallest free trial slot below ``n_trials`` for this worker, or ``None``. A slot
        claimed more than ``stale_after`` seconds ago and never bound is free again."""
        import sqlalchemy as sa

        c = self.slots.c
        while True:
            now = datetime.now(UTC).replace(tzinfo=None)
            taken = self._slots()
            free = [k for k in range(n_trials) if k not in taken]
            stale = [
                k
                for k, (trial, at) in sorted(taken.items())
                if k < n_trials and trial is None and (now - at).total_seconds() > stale_after
            ]
            if not free and not stale:
                return None
            for k in free:
                try:
                    self._retry(
                        lambda conn, k=k, now=now: conn.execute(
                            self.slots.insert().values(
                                study_name=self.study_name,
                                slot=k,
                                worker=self.worker,
                                claimed_at=now,
                            )
                        )
                    )
                    return k
                except sa.exc.IntegrityError:  # another worker took it first
                    continue
            for k in stale:
                won = self._retry(
                    lambda conn, k=k, now=now, at=taken[k][1]: (
                        conn.execute(
                            self.slots.update()
                            .where(c.study_name == self.study_name, c.slot == k)
                            .where(c.trial_number.is_(None), c.claimed_at == at)
                            .values(worker=self.worker, claimed_at=now)
                        ).rowcount
                    )
                )
                if won == 1:
                    return k

    def bind(self, slot: int, trial_number: int) -> bool:
        """Tie ``slot`` to the Optuna trial asked for it; False if the slot is not this
        worker's any more (taken over as stale while this worker was stopped)."""
        c = self.slots.c
        won = self._retry(
            lambda conn: (
                conn.execute(
                    self.slots.update()
                    .where(c.study_name == self.study_name, c.slot == slot)
                    .where(c.worker == self.worker, c.trial_number.is_(None))
                    .values(trial_number=trial_number)
                ).rowcount
            )
        )
        return won == 1

    def parent_run(self, create: Callable[[], tuple[str, str]], timeout: float = 120) -> tuple:
        """The study's (parent run id, experiment id): created by ``create`` in the first
        worker, read by the others (who wait for it up to ``timeout`` seconds)."""
        import sqlalchemy as sa

        table = self.parents
        row = self._read_parent()
        if row is None:
            try:
                self._retry(
                    lambda conn: conn.execute(table.insert().values(study_name=self.study_name))
                )
            except sa.exc.IntegrityError:
                pass  # another worker is creating it
            else:
                try:
                    run_id, experiment_id = create()
                except BaseException:  # let the next worker try, instead of waiting on nothing
                    self._retry(
                        lambda conn: conn.execute(
                            table.delete().where(table.c.study_name == self.study_name)
                        )
                    )
                    raise
                self._retry(
                    lambda conn: conn.execute(
                        table.update()
                        .where(table.c.study_name == self.study_name)
                        .values(parent_run_id=run_id, experiment_id=experiment_id)
                    )
                )
                return run_id, experiment_id
        deadline = time.time() + timeout
        while True:
            row = self._read_parent()
            if row is not None and row[0]:
                return row[0], row[1]
            if time.time() > deadline:
                raise TrackingError(
                    f"study {self.study_name}: no MLflow parent run after {timeout:.0f} s (the "
                    "worker creating it may have died); delete its row from "
                    "trademl_tune_parents or use another tune.study_name"
                )
            time.sleep(0.25)

    def _read_parent(self):
        import sqlalchemy as sa

        table = self.parents
        return self._retry(
            lambda conn: conn.execute(
                sa.select(table.c.parent_run_id, table.c.experiment_id).where(
                    table.c.study_name == self.study_name
                )
            ).first()
        )

    def take_summary(self, n_trials: int) -> tuple[bool, int | None]:
        """(True, trials summarised before) for exactly one caller per study and number of
        trials, the one that writes its summary (again if the study was extended with a
        larger ``tune.n_trials``): hand the second value to :meth:`release_summary` if writing
        fails; (False, None) for every other caller."""
        import sqlalchemy as sa

        table = self.parents
        before = self._retry(
            lambda conn: conn.execute(
                sa.select(table.c.summarised_trials).where(table.c.study_name == self.study_name)
            ).scalar_one_or_none()
        )
        result = self._retry(
            lambda conn: conn.execute(
                table.update()
                .where(table.c.study_name == self.study_name)
                .where(
                    table.c.summarised_trials.is_(None)
                    if before is None
                    else table.c.summarised_trials == before
                )
                .where(
                    sa.or_(
                        table.c.summarised_trials.is_(None),
                        table.c.summarised_trials < n_trials,
                    )
                )
                .values(summarised_by=self.worker, summarised_trials=n_trials)
            )
        )
        return (True, before) if result.rowcount == 1 else (False, None)

    def release_summary(self, before: int | None) -> None:
        """Writing the summary failed: let the next worker (or a re-run) write it."""
        table = self.parents
        self._retry(
            lambda conn: conn.execute(
                table.update()
                .where(table.c.study_name == self.study_name)
                .values(summarised_by=None, summarised_trials=before)
            )
        )

    def dispose(self) -> None:
        self.engine.dispose()
