"""The syntax tree of a FHIRPath expression (the subset SQL on FHIR views use)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Literal:
    """A literal value: string, boolean, integer, decimal, date/time, or ``{}`` (``value`` None)."""

    value: Any
    type: str | None


@dataclass(frozen=True, slots=True)
class Ident:
    """An element name at the start of an expression, navigated from the focus."""

    name: str


@dataclass(frozen=True, slots=True)
class Member:
    target: Node
    name: str


@dataclass(frozen=True, slots=True)
class Call:
    """A function call; ``target`` None means it is invoked on the focus (``where(...)``)."""

    target: Node | None
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Index:
    target: Node
    index: Node


@dataclass(frozen=True, slots=True)
class Var:
    """An environment variable or view constant: ``%name``."""

    name: str


@dataclass(frozen=True, slots=True)
class Special:
    """``$this``, ``$index`` or ``$total``."""

    name: str


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class TypeOp:
    """``is`` / ``as`` with a type specifier."""

    op: str
    operand: Node
    type_name: str


Node = Literal | Ident | Member | Call | Index | Var | Special | Binary | Unary | TypeOp


def type_name_of(node: Node) -> str | None:
    """The type specifier a node spells (``Patient``, ``FHIR.Patient``, ``System.String``), if any."""
    if isinstance(node, Ident):
        return node.name
    if isinstance(node, Member) and isinstance(node.target, Ident):
        return f"{node.target.name}.{node.name}"
    return None


def walk(node: Node) -> list[Node]:
    """``node`` and all nodes below it, depth first."""
    out: list[Node] = [node]
    for child in children(node):
        out.extend(walk(child))
    return out


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of ``node``."""
    if isinstance(node, Member):
        return (node.target,)
    if isinstance(node, Call):
        return ((node.target,) if node.target is not None else ()) + node.args
    if isinstance(node, Index):
        return (node.target, node.index)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Unary | TypeOp):
        return (node.operand,)
    return ()
