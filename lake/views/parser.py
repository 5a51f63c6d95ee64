"""A FHIRPath parser (precedence climbing) for the expressions SQL on FHIR views use.

Raises FhirPathSyntaxError with the position of the offending token; the message quotes
the view's expression only, never data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from lake.views.ast import Binary, Call, Ident, Index, Literal, Member, Node, Special, TypeOp, Unary, Var, children
from lake.views.errors import FhirPathSyntaxError
from lake.views.values import Temporal

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<quoted>`(?:[^`\\]|\\.)*`)
  | (?P<temporal>@T\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?
       |@\d{4}(?:-\d{2}(?:-\d{2})?)?(?:T(?:\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)?(?:Z|[+-]\d{2}:\d{2})?)?)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<special>\$[A-Za-z]+)
  | (?P<var>%(?:[A-Za-z_][A-Za-z0-9_]*|`(?:[^`\\]|\\.)*`|'(?:[^'\\]|\\.)*'))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|!~|[=~<>+\-*/&|()\[\]{}.,])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/"}
_INFIX: dict[str, int] = {
    "implies": 1,
    "or": 2,
    "xor": 2,
    "and": 3,
    "in": 4,
    "contains": 4,
    "=": 5,
    "~": 5,
    "!=": 5,
    "!~": 5,
    "<": 6,
    ">": 6,
    "<=": 6,
    ">=": 6,
    "|": 7,
    "is": 8,
    "as": 8,
    "+": 9,
    "-": 9,
    "&": 9,
    "*": 10,
    "/": 10,
    "div": 10,
    "mod": 10,
}
_UNARY_POWER = 11
MAX_LENGTH = 4096  # characters of one expression
MAX_DEPTH = 64  # nesting of sub-expressions (parentheses, arguments, operands)
MAX_TREE_DEPTH = 200  # steps of the syntax tree (evaluation recurses once per step)
_SPECIALS = frozenset({"$this", "$index", "$total"})


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    pos: int


def _unescape(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "u" and i + 5 < len(body):
                out.append(chr(int(body[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``; raises FhirPathSyntaxError at the first character that starts none."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise FhirPathSyntaxError(f"unexpected character at position {pos} of FHIRPath '{text}'")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, tok: Token, what: str) -> FhirPathSyntaxError:
        return FhirPathSyntaxError(f"{what} at position {tok.pos} of FHIRPath '{self.text}'")

    def expect(self, text: str) -> None:
        tok = self.next()
        if tok.text != text or tok.kind not in ("op", "ident"):
            raise self.fail(tok, f"expected '{text}'")

    def parse(self) -> Node:
        node = self.expression(0)
        tok = self.peek()
        if tok.kind != "end":
            raise self.fail(tok, "unexpected token")
        return node

    def expression(self, min_power: int) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(self.peek(), "expression nested too deeply")
        try:
            return self._infix(min_power)
        finally:
            self.depth -= 1

    def _infix(self, min_power: int) -> Node:
        left = self.unary()
        while True:
            tok = self.peek()
            power = _INFIX.get(tok.text) if tok.kind in ("op", "ident") else None
            if power is None or power <= min_power:
                return left
            self.next()
            if tok.text in ("is", "as"):
                left = TypeOp(tok.text, left, self.type_specifier())
            else:
                left = Binary(tok.text, left, self.expression(power))

    def type_specifier(self) -> str:
        parts = [self.identifier()]
        while self.peek().text == "." and self.tokens[self.i + 1].kind in ("ident", "quoted"):
            self.next()
            parts.append(self.identifier())
        return ".".join(parts)

    def identifier(self) -> str:
        tok = self.next()
        if tok.kind == "ident":
            return tok.text
        if tok.kind == "quoted":
            return _unescape(tok.text[1:-1])
        raise self.fail(tok, "expected an identifier")

    def unary(self) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("+", "-"):
            self.next()
            return Unary(tok.text, self.expression(_UNARY_POWER))
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            tok = self.peek()
            if tok.text == "." and tok.kind == "op":
                self.next()
                name = self.identifier()
                node = Call(node, name, self.arguments()) if self.peek().text == "(" else Member(node, name)
            elif tok.text == "[" and tok.kind == "op":
                self.next()
                index = self.expression(0)
                self.expect("]")
                node = Index(node, index)
            else:
                return node

    def arguments(self) -> tuple[Node, ...]:
        self.expect("(")
        args: list[Node] = []
        if self.peek().text != ")":
            args.append(self.expression(0))
            while self.peek().text == ",":
                self.next()
                args.append(self.expression(0))
        self.expect(")")
        return tuple(args)

    def primary(self) -> Node:
        tok = self.next()
        if tok.kind == "string":
            return Literal(_unescape(tok.text[1:-1]), "string")
        if tok.kind == "number":
            return Literal(Decimal(tok.text), "decimal") if "." in tok.text else Literal(int(tok.text), "integer")
        if tok.kind == "temporal":
            return _temporal_literal(tok.text[1:])
        if tok.kind == "var":
            name = tok.text[1:]
            return Var(_unescape(name[1:-1]) if name[:1] in ("`", "'") else name)
        if tok.kind == "special":
            if tok.text not in _SPECIALS:
                raise self.fail(tok, "unknown special variable")
            return Special(tok.text)
        if tok.kind in ("ident", "quoted"):
            return self.name_or_call(tok)
        if tok.text == "(":
            node = self.expression(0)
            self.expect(")")
            return node
        if tok.text == "{":
            self.expect("}")
            return Literal(None, None)
        raise self.fail(tok, "unexpected token")

    def name_or_call(self, tok: Token) -> Node:
        name = tok.text if tok.kind == "ident" else _unescape(tok.text[1:-1])
        if tok.kind == "ident" and name in ("true", "false"):
            return Literal(name == "true", "boolean")
        if tok.kind == "ident" and self.peek().text == "(":
            return Call(None, name, self.arguments())
        return Ident(name)


def _temporal_literal(text: str) -> Literal:
    if text.startswith("T"):
        literal = Literal(text[1:], "time")
    elif "T" in text:
        literal = Literal(text.rstrip("T"), "dateTime")
    else:
        literal = Literal(text, "date")
    if Temporal.parse(literal.value, str(literal.type)) is None:
        raise FhirPathSyntaxError(f"'@{text}' is not a valid date or time")
    return literal


@lru_cache(maxsize=1024)
def parse(text: str) -> Node:
    """The syntax tree of FHIRPath ``text``; raises FhirPathSyntaxError."""
    if not isinstance(text, str) or not text.strip():
        raise FhirPathSyntaxError("a FHIRPath expression must be a non-empty string")
    if len(text) > MAX_LENGTH:
        raise FhirPathSyntaxError(f"a FHIRPath expression may have at most {MAX_LENGTH} characters")
    node = _Parser(text).parse()
    if _tree_depth(node) > MAX_TREE_DEPTH:
        raise FhirPathSyntaxError(f"a FHIRPath expression may nest at most {MAX_TREE_DEPTH} steps")
    return node


def _tree_depth(node: Node) -> int:
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children(current))
    return deepest
