"""Casbin policy in PostgreSQL (the production profile): a small pycasbin adapter over SQLAlchemy.

The embedded default reads ``authz_policy.csv`` shipped with the project. With
``auth.policy_db_url`` set, policy lines live in the table ``casbin_rule``
(ptype, v0…v5), seeded from the shipped CSV the first time, and every gateway
process loads the same rules. Written here rather than taken from the
``casbin_sqlalchemy_adapter`` distribution, which pulls in the old ``casbin``
distribution that must never sit beside ``pycasbin``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from casbin import persist
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, delete, insert, select

_META = MetaData()
RULES = Table(
    "casbin_rule",
    _META,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ptype", String(16), nullable=False),
    *(Column(f"v{i}", String(512)) for i in range(6)),
)


class SqlPolicyAdapter(persist.Adapter):  # type: ignore[misc]
    """Loads and saves Casbin policy lines in one SQL table."""

    def __init__(self, url: str) -> None:
        self._engine = create_engine(url, pool_pre_ping=True)
        _META.create_all(self._engine)

    def is_empty(self) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(select(RULES.c.id).limit(1)).first() is None

    def seed(self, lines: Iterable[Sequence[str]]) -> None:
        """Insert the shipped policy (``ptype, v0, …``) when the table is empty."""
        with self._engine.begin() as conn:
            if conn.execute(select(RULES.c.id).limit(1)).first() is None:
                conn.execute(insert(RULES), [_row(line[0], line[1:]) for line in lines])

    def load_policy(self, model: Any) -> None:
        with self._engine.connect() as conn:
            for row in conn.execute(select(RULES).order_by(RULES.c.id)):
                values = [v for v in row[2:] if v is not None]
                persist.load_policy_line(", ".join([row.ptype, *values]), model)

    def save_policy(self, model: Any) -> bool:
        with self._engine.begin() as conn:
            conn.execute(delete(RULES))
            for sec in ("p", "g"):
                for ptype, assertion in model.model.get(sec, {}).items():
                    for rule in assertion.policy:
                        conn.execute(insert(RULES).values(**_row(ptype, rule)))
        return True

    def add_policy(self, sec: str, ptype: str, rule: Sequence[str]) -> None:
        if sec == "g":  # role grants are derived from each token at runtime, never persisted
            return
        with self._engine.begin() as conn:
            conn.execute(insert(RULES).values(**_row(ptype, rule)))

    def remove_policy(self, sec: str, ptype: str, rule: Sequence[str]) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(RULES).where(*_match(ptype, rule)))

    def remove_filtered_policy(self, sec: str, ptype: str, field_index: int, *values: str) -> None:
        conditions = [RULES.c.ptype == ptype]
        for offset, value in enumerate(values):
            if value:
                conditions.append(RULES.c[f"v{field_index + offset}"] == value)
        with self._engine.begin() as conn:
            conn.execute(delete(RULES).where(*conditions))

    def close(self) -> None:
        self._engine.dispose()


def _row(ptype: str, rule: Sequence[str]) -> dict[str, Any]:
    return {"ptype": ptype, **{f"v{i}": value for i, value in enumerate(rule)}}


def _match(ptype: str, rule: Sequence[str]) -> list[Any]:
    return [RULES.c.ptype == ptype, *(RULES.c[f"v{i}"] == value for i, value in enumerate(rule))]
