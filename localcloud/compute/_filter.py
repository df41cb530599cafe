"""The list `filter` expression language of the Compute API (the subset a pool needs).

Grammar: `expr := conj (OR conj)*`, `conj := unary ((AND)? unary)*`,
`unary := NOT? primary`, `primary := '(' expr ')' | FIELD OP VALUE`, with OP one of
`=`, `!=`, `:` (has; `labels.k:*` tests presence), `eq`/`ne` (RE2-style full regex match).
`=`/`!=` accept `*` wildcards. Fields are dotted paths into the resource JSON; a URL-valued
field (zone, machineType) also matches its last path segment.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any

from localcloud.compute._errors import invalid

Predicate = Callable[[dict[str, Any]], bool]

_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<paren>[()])
      | (?P<op>!=|=|:)
      | (?P<quoted>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<word>[^\s()=!:"']+)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"AND", "OR", "NOT"}
_WORD_OPS = {"eq", "ne"}


class _FilterSyntaxError(ValueError):
    pass


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match or match.end() == pos:
            raise _FilterSyntaxError(text[pos:])
        pos = match.end()
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "quoted":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif kind == "word" and value in _KEYWORDS:
            kind = "kw"
        tokens.append((kind, value))
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise _FilterSyntaxError("unexpected end")
        self.pos += 1
        return token

    def expr(self) -> Predicate:
        parts = [self.conj()]
        while self.peek() == ("kw", "OR"):
            self.take()
            parts.append(self.conj())
        return parts[0] if len(parts) == 1 else lambda r: any(p(r) for p in parts)

    def conj(self) -> Predicate:
        parts = [self.unary()]
        while (token := self.peek()) is not None and token not in (("paren", ")"), ("kw", "OR")):
            if token == ("kw", "AND"):
                self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else lambda r: all(p(r) for p in parts)

    def unary(self) -> Predicate:
        if self.peek() == ("kw", "NOT"):
            self.take()
            inner = self.primary()
            return lambda r: not inner(r)
        return self.primary()

    def primary(self) -> Predicate:
        kind, value = self.take()
        if (kind, value) == ("paren", "("):
            inner = self.expr()
            if self.take() != ("paren", ")"):
                raise _FilterSyntaxError("missing )")
            return inner
        if kind != "word":
            raise _FilterSyntaxError(value)
        op_kind, op = self.take()
        if op_kind != "op" and not (op_kind == "word" and op in _WORD_OPS):
            raise _FilterSyntaxError(op)
        literal_kind, literal = self.take()
        if literal_kind not in ("word", "quoted"):
            raise _FilterSyntaxError(literal)
        return _comparison(value, op, literal)


def _lookup(resource: dict[str, Any], field: str) -> Any:
    node: Any = resource
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _equal(actual: Any, literal: str) -> bool:
    text = _as_text(actual)
    candidates = [text, text.rsplit("/", 1)[-1]] if text.startswith("http") else [text]
    if "*" in literal:
        return any(fnmatch.fnmatchcase(c, literal) for c in candidates)
    return literal in candidates


def _comparison(field: str, op: str, literal: str) -> Predicate:
    if op in _WORD_OPS:
        pattern = re.compile(literal)
        positive = op == "eq"
        return lambda r: (
            ((v := _lookup(r, field)) is not None and bool(pattern.fullmatch(_as_text(v))))
            == positive
        )
    if op == ":":
        if literal == "*":
            return lambda r: _lookup(r, field) is not None
        return lambda r: (v := _lookup(r, field)) is not None and _equal(v, literal)
    positive = op == "="
    return lambda r: ((v := _lookup(r, field)) is not None and _equal(v, literal)) == positive


def compile_filter(text: str | None) -> Predicate:
    """Compile a GCE list filter; an empty filter matches everything; bad syntax is a 400."""
    if not text or not text.strip():
        return lambda _r: True
    try:
        parser = _Parser(_tokenize(text))
        predicate = parser.expr()
        if parser.peek() is not None:
            raise _FilterSyntaxError(parser.peek()[1])  # type: ignore[index]
    except (_FilterSyntaxError, re.error) as exc:
        raise invalid("filter", text, f"Invalid list filter expression ({exc}).") from exc
    return predicate
