"""A small, safe arithmetic parser for Countdown answers.

It reads integers, ``+ - * /``, unary minus and parentheses into a tiny tree, and evaluates
the tree exactly with :class:`fractions.Fraction`. Nothing else is admitted: names, calls,
attribute access, ``**``, decimals and any other character are a :class:`ParseError`.

Departure from the reference: d1 (after TinyZero) checks the characters with a regex and then
runs Python ``eval`` with floating-point division and a 1e-5 tolerance. Here no model-written
text is ever executed, division is exact (so ``7/3*3`` is exactly 7), and a division by zero
is reported as :class:`ZeroDivisionError` at evaluation time, separately from syntax errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MAX_CHARS = 1000  # longer answers are refused: Countdown equations are short
MAX_DEPTH = 64  # nesting limit, so deep parentheses cannot exhaust the Python stack

_TOKEN = re.compile(r"\s*(?:([0-9]+)|([-+*/()]))")


class ParseError(ValueError):
    """The text is not an arithmetic expression this parser admits."""


@dataclass(frozen=True)
class Num:
    value: int


@dataclass(frozen=True)
class Neg:
    operand: Node


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * /
    left: Node
    right: Node


Node = Num | Neg | BinOp


def tokenize(text: str) -> list[str]:
    """Split ``text`` into integer literals and operator/parenthesis tokens."""
    if len(text) > MAX_CHARS:
        raise ParseError(f"expression longer than {MAX_CHARS} characters")
    tokens, pos = [], 0
    stripped_end = len(text.rstrip())
    while pos < stripped_end:
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ParseError(f"unexpected character {text[pos:].lstrip()[:1]!r} at {pos}")
        tokens.append(match.group(1) or match.group(2))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent: expr := term (('+'|'-') term)*; term := unary (('*'|'/') unary)*;
    unary := '-' unary | atom; atom := INT | '(' expr ')'."""

    def __init__(self, tokens: list[str]):
        self.tokens, self.pos, self.depth = tokens, 0, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ParseError("expression ends too early")
        self.pos += 1
        return token

    def expr(self) -> Node:
        node = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            node = BinOp(op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            node = BinOp(op, node, self.unary())
        return node

    def unary(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError(f"expression nested deeper than {MAX_DEPTH}")
        if self.peek() == "-":
            self.take()
            node: Node = Neg(self.unary())
        else:
            node = self.atom()
        self.depth -= 1
        return node

    def atom(self) -> Node:
        token = self.take()
        if token.isdigit():
            return Num(int(token))
        if token == "(":
            node = self.expr()
            if self.take() != ")":
                raise ParseError("missing ')'")
            return node
        raise ParseError(f"unexpected {token!r}")


def parse(text: str) -> Node:
    """Parse ``text`` into an expression tree; raise :class:`ParseError` if it is not one."""
    tokens = tokenize(text)
    if not tokens:
        raise ParseError("empty expression")
    parser = _Parser(tokens)
    node = parser.expr()
    if parser.peek() is not None:
        raise ParseError(f"unexpected {parser.peek()!r} after the expression")
    return node


def evaluate(node: Node) -> Fraction:
    """Exact value of ``node``; raises :class:`ZeroDivisionError` on a division by zero."""
    if isinstance(node, Num):
        return Fraction(node.value)
    if isinstance(node, Neg):
        return -evaluate(node.operand)
    left, right = evaluate(node.left), evaluate(node.right)
    if node.op == "+":
        return left + right
    if node.op == "-":
        return left - right
    if node.op == "*":
        return left * right
    if right == 0:
        raise ZeroDivisionError("division by zero")
    return left / right


def literals(node: Node) -> list[int]:
    """The integer literals of ``node``, left to right (unary minus is not part of them)."""
    if isinstance(node, Num):
        return [node.value]
    if isinstance(node, Neg):
        return literals(node.operand)
    return literals(node.left) + literals(node.right)


def to_text(node: Node) -> str:
    """Render ``node`` with the parentheses it needs (``parse(to_text(n))`` evaluates the same)."""
    if isinstance(node, Num):
        return str(node.value)
    if isinstance(node, Neg):
        inner = to_text(node.operand)
        return f"-{inner}" if isinstance(node.operand, Num) else f"-({inner})"
    prec = {"+": 1, "-": 1, "*": 2, "/": 2}
    left, right = to_text(node.left), to_text(node.right)
    if isinstance(node.left, BinOp) and prec[node.left.op] < prec[node.op]:
        left = f"({left})"
    if isinstance(node.right, BinOp) and (
        prec[node.right.op] < prec[node.op] or (prec[node.right.op] == prec[node.op] and node.op in "-/")
    ):
        right = f"({right})"
    return f"{left}{node.op}{right}"
