"""What the workers of one study agree on, in the study's own database.

Optuna's RDB storage shares the trials; two small tables beside Optuna's (``trademl_tune_*``)
make the rest exact whatever the number of ``trademl tune`` processes and machines:

* **slots**: a worker claims trial slot ``k`` by inserting ``(study, k)`` under a primary key
  before it asks Optuna for a trial, and stops when ``k`` would reach ``tune.n_trials``: the
  study gets exactly N trials (Optuna's ``MaxTrialsCallback`` counts, then starts, and can
  overshoot by one trial per worker);
* **parents**: the first worker to insert the study's row creates its MLflow parent run, the
  others wait for its id; the first to mark the study summarised writes the summary (and
  registers the best model) once.
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

    def claimed(self) -> int:
        import sqlalchemy as sa

        return self._retry(
            lambda conn: conn.execute(
                sa.select(sa.func.count())
                .select_from(self.slots)
                .where(self.slots.c.study_name == self.study_name)
            ).scalar_one()
        )

    def claim(self, n_trials: int) -> int | None:
        """The next free trial slot below ``n_trials`` for this worker, or ``None``."""
        import sqlalchemy as sa

        while True:
            taken = self.claimed()
            if taken >= n_trials:
                return None
            try:
                self._retry(
                    lambda conn, k=taken: conn.execute(
                        self.slots.insert().values(
                            study_name=self.study_name,
                            slot=k,
                            worker=self.worker,
                            claimed_at=datetime.now(UTC).replace(tzinfo=None),
                        )
                    )
                )
                return taken
            except sa.exc.IntegrityError:  # another worker took it first: count again
                continue

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
                run_id, experiment_id = create()
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

    def take_summary(self, n_trials: int) -> bool:
        """True for exactly one caller per study and number of trials: the one that writes
        its summary (again if the study was extended with a larger ``tune.n_trials``)."""
        import sqlalchemy as sa

        table = self.parents
        result = self._retry(
            lambda conn: conn.execute(
                table.update()
                .where(table.c.study_name == self.study_name)
                .where(
                    sa.or_(
                        table.c.summarised_trials.is_(None),
                        table.c.summarised_trials < n_trials,
                    )
                )
                .values(summarised_by=self.worker, summarised_trials=n_trials)
            )
        )
        return result.rowcount == 1

    def dispose(self) -> None:
        self.engine.dispose()
