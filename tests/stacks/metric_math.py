"""A type checker for CloudWatch metric-math expressions, after the rules CloudWatch documents.

Source: the Amazon CloudWatch User Guide, "Using math expressions with CloudWatch metrics"
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/using-metric-math.html): every value
is a scalar (S), a time series (TS) or an array of time series (TS[]); each function accepts only
the argument types its table row lists; IF accepts only the syntaxes listed under "Using IF
expressions"; the final result must be a single TS or a TS[] (an alarm watches one TS).

Only the functions this project could plausibly use are listed; anything else is refused, so a
new function has to be looked up and added here before an expression may use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

S, TS, TS_ARRAY = "S", "TS", "TS[]"

# Aggregations: of one TS a scalar, of a TS[] one TS (the rows for MAX, MIN, SUM, AVG, STDDEV).
_AGGREGATIONS = {"MAX", "MIN", "SUM", "AVG", "STDDEV"}
# Element-wise functions: TS -> TS, TS[] -> TS[] (ABS, CEIL, FLOOR, LOG, LOG10, DIFF, RATE, ...).
_ELEMENT_WISE = {"ABS", "CEIL", "FLOOR", "LOG", "LOG10", "DIFF", "DIFF_TIME", "RATE"}
# The documented IF syntaxes (condition, value if true, value if false); the third may be omitted.
_IF_SYNTAXES = {
    (TS, S, S),
    (TS, S, TS),
    (TS, TS, S),
    (TS, TS, TS),
    (S, TS, TS),
}

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>==|!=|<=|>=|&&|\|\||[-+*/^<>()\[\],]))"
)


class MetricMathError(ValueError):
    """The expression breaks one of CloudWatch's documented metric-math rules."""


@dataclass(frozen=True)
class Call:
    """A function call found in the expression, with its arguments' types."""

    name: str
    argument_types: tuple[str, ...]


def _tokens(expression: str) -> list[str]:
    tokens, position = [], 0
    expression = expression.rstrip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if not match or match.end() == position:
            raise MetricMathError(f"cannot read {expression[position:]!r}")
        tokens.append(match.group(match.lastgroup))
        position = match.end()
    return tokens


class _Checker:
    def __init__(self, expression: str, ids: set[str]) -> None:
        self.tokens = _tokens(expression)
        self.position = 0
        self.ids = ids
        self.used_ids: set[str] = set()
        self.calls: list[Call] = []

    # --- tokens ------------------------------------------------------------------------------

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise MetricMathError(f"expected {expected or 'more'} at token {self.position}, found {token!r}")
        self.position += 1
        return token

    # --- grammar: or > and > comparison > + - > * / > unary - > ^ > primary ------------------

    def expression(self) -> str:
        left = self.conjunction()
        while self.peek() in ("OR", "||"):
            self.take()
            left = self.comparison_type(left, self.conjunction())
        return left

    def conjunction(self) -> str:
        left = self.comparison()
        while self.peek() in ("AND", "&&"):
            self.take()
            left = self.comparison_type(left, self.comparison())
        return left

    def comparison(self) -> str:
        left = self.additive()
        if self.peek() in ("==", "!=", "<=", ">=", "<", ">"):
            self.take()
            left = self.comparison_type(left, self.additive())
        return left

    def additive(self) -> str:
        left = self.multiplicative()
        while self.peek() in ("+", "-"):
            self.take()
            left = self.arithmetic_type(left, self.multiplicative())
        return left

    def multiplicative(self) -> str:
        left = self.unary()
        while self.peek() in ("*", "/"):
            self.take()
            left = self.arithmetic_type(left, self.unary())
        return left

    def unary(self) -> str:
        if self.peek() == "-":
            self.take()
            return self.unary()
        base = self.primary()
        if self.peek() == "^":
            self.take()
            return self.arithmetic_type(base, self.unary())
        return base

    def primary(self) -> str:
        word = self.take()
        if word == "(":
            inner = self.expression()
            self.take(")")
            return inner
        if word == "[":
            elements = [self.expression()]
            while self.peek() == ",":
                self.take()
                elements.append(self.expression())
            self.take("]")
            if S in elements:
                raise MetricMathError("an array [...] holds time series only; a scalar cannot be an element")
            return TS_ARRAY
        if re.fullmatch(r"\d+(?:\.\d+)?", word):
            return S
        if self.peek() == "(":
            return self.call(word)
        if word not in self.ids:
            raise MetricMathError(f"{word!r} is not the id of a metric or expression in the request")
        self.used_ids.add(word)
        return TS

    def call(self, name: str) -> str:
        self.take("(")
        arguments = [] if self.peek() == ")" else [self.expression()]
        while self.peek() == ",":
            self.take()
            arguments.append(self.expression())
        self.take(")")
        self.calls.append(Call(name, tuple(arguments)))
        if name in _AGGREGATIONS:
            if arguments not in ([TS], [TS_ARRAY]):
                raise MetricMathError(f"{name} takes one TS or one TS[], not {arguments}")
            return S if arguments == [TS] else TS
        if name in _ELEMENT_WISE:
            if arguments not in ([TS], [TS_ARRAY]):
                raise MetricMathError(f"{name} takes one TS or one TS[], not {arguments}")
            return arguments[0]
        if name == "IF":
            if len(arguments) not in (2, 3) or (*arguments, TS)[:3] not in _IF_SYNTAXES:
                raise MetricMathError(f"IF{tuple(arguments)} is none of the documented IF syntaxes")
            return TS
        if name == "FILL":
            if len(arguments) != 2 or arguments[0] == S or arguments[1] == TS_ARRAY:
                raise MetricMathError(f"FILL takes (TS or TS[], S or TS), not {arguments}")
            return arguments[0]
        if name == "TIME_SERIES":
            if arguments != [S]:
                raise MetricMathError(f"TIME_SERIES takes one scalar, not {arguments}")
            return TS
        raise MetricMathError(f"{name!r} is not a metric-math function this checker knows (functions are uppercase)")

    # --- operand rules -----------------------------------------------------------------------

    @staticmethod
    def arithmetic_type(left: str, right: str) -> str:
        if left == TS_ARRAY and right == TS_ARRAY:
            raise MetricMathError("arithmetic between two arrays of time series is not documented")
        if TS_ARRAY in (left, right):
            return TS_ARRAY
        return TS if TS in (left, right) else S

    @staticmethod
    def comparison_type(left: str, right: str) -> str:
        if TS_ARRAY in (left, right):
            raise MetricMathError("comparison and logical operators take time series or scalars, not arrays")
        return TS if TS in (left, right) else S


@dataclass(frozen=True)
class Checked:
    result_type: str
    used_ids: frozenset[str]
    calls: tuple[Call, ...]


def check(expression: str, ids: set[str]) -> Checked:
    """Type-check ``expression`` with ``ids`` as the request's metric ids; raise MetricMathError if invalid."""
    checker = _Checker(expression, ids)
    result = checker.expression()
    if checker.peek() is not None:
        raise MetricMathError(f"unexpected {checker.peek()!r} after a complete expression")
    if result == S:
        raise MetricMathError("the result is a scalar: an expression must produce a time series")
    return Checked(result, frozenset(checker.used_ids), tuple(checker.calls))
