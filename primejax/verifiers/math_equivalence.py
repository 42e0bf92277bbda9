"""Equivalence of two final math answers (SPEC §7), built on math-verify.

`answers_equivalent` tries three rules in order:

1. string equality after `normalize_answer` (notation, wrappers, units, separators);
2. math-verify: both normalised answers parsed by its LaTeX parser and compared symbolically, then once
   more with a lone free `i` read as the imaginary unit;
3. numeric tolerance, only when one side is written as a decimal: two numbers within `rel_tol` of each
   other match (`0.33333` ~ `1/3`), two exact values never do (`100001` vs `100000`).

Model-written answers are hostile input. They are only ever read by the ANTLR LaTeX grammar of
latex2sympy, never by `sympify`/`parse_expr` (which call `eval`). math-verify's own timeouts are off: the
process pool bounds the time from outside with an exception derived from BaseException, which nothing
here catches. Every regular expression runs in time linear in the answer length.
"""

from __future__ import annotations

import logging
import re

import sympy
from math_verify import LatexExtractionConfig, parse, verify

# Timeouts are disabled on purpose (see the module docstring); math-verify warns about that once.
for logger_name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(logger_name).addFilter(lambda record: not record.getMessage().startswith("Timeout is disabled"))

LATEX_ONLY = [LatexExtractionConfig()]
EVALF_DIGITS = 30

WHITESPACE = re.compile(r"\s+")
SIZED_DELIMITER = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?:\.|(?![A-Za-z]))")
# A LaTeX line break `\\` is matched as a whole so that its second backslash is not read as a command.
SPACING_COMMAND = re.compile(r"\\\\|\\[,;: ]|~|\\q?quad(?![A-Za-z])")
INVISIBLE_COMMAND = re.compile(r"\\!|\\displaystyle(?![A-Za-z])")
TEXT_WRAPPER = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|textsf|texttt|mathrm|mathbf|mathit|mathsf|mathtt|mbox|hbox)"
    r" ?\{([^{}]*)\}"
)
TEXT_WRAPPER_MAX_NESTING = 4
FRACTION_VARIANT = re.compile(r"\\[dtc]frac(?![A-Za-z])")
EMPTY_SET = re.compile(r"\\varnothing(?![A-Za-z])|\\\{ ?\\\}|\u2205")
DEGREE_MARK = re.compile(r"\^ ?(?:\{ ?\\circ ?\}|\\circ(?![A-Za-z]))|\u00b0|\\degree(?![A-Za-z])")
BARE_PERCENT = re.compile(r"(?<!\\)%")
UNIT_WORDS = (
    "units?|cm|mm|km|m/s|km/h|meters?|metres?|centimeters?|centimetres?|millimeters?|kilometers?|inch|inches|"
    "feet|foot|ft|yards?|miles?|mph|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?|"
    "grams?|kg|kilograms?|mg|pounds?|lbs?|ounces?|oz|liters?|litres?|ml|gallons?|dollars?|cents?|degrees?|"
    "radians?|rad|people|persons?"
)
# A unit at the very end: after a space, or right after a number or a closing bracket ("5cm", "\frac{1}{2}cm").
TRAILING_UNIT = re.compile(
    rf"(?:(?<=[\d}})])| )(?:(?:square|sq|cubic|cu) )?(?:{UNIT_WORDS})(?: ?\^\{{?[23]\}}?|[²³])?$"
)
BRACED_THOUSANDS_COMMA = re.compile(r"(?<=\d)\{,\}(?=\d{3}(?!\d))")
# Digit groups separated by single spaces ("1 000 000"): only a whole, properly grouped run is joined.
SPACED_THOUSANDS = re.compile(r"(?<![\d.])(?<!\d )\d{1,3}(?: \d{3})+(?!\d| \d)")
COMMA_GROUPED_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
E_NOTATION = re.compile(r"(?<![\w.\\])(\d+(?:\.\d*)?|\.\d+)[eE]\+?(-?\d+)(?![\w.])")
ASSIGNMENT_PREFIX = re.compile(r"[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)? ?=(?!=) ?")
RELATION = re.compile(r"[=<>]|\\(?:le|ge|ne|leq|geq|neq|lt|gt)(?![A-Za-z])")
CHOICE_LETTER = re.compile(r"\(([A-Za-z])\)")
# A space matters only between two letters or digits ("\pi r", "no change", "1 2"); elsewhere it goes.
LOOSE_SPACE = re.compile(r"(?<![0-9A-Za-z]) | (?![0-9A-Za-z])")
PLAIN_TEXT = re.compile(r"[A-Za-z][A-Za-z' -]*")
WORD = re.compile(r"[A-Za-z]{2}")
DECIMAL_POINT = re.compile(r"\.\d")


_INTEGER = re.compile(r"[+-]?\d+")


def answers_equivalent(pred: str, gold: str, *, rel_tol: float = 1e-4) -> bool:
    """True when the predicted answer says the same as the gold answer.

    Rule 1: equal normalised strings; two integer literals are equal by value and by nothing else.
    Rule 2: math-verify on the normalised answers (gold first: its comparison is not symmetric), then
    with `i` read as the imaginary unit. Rule 3: `rel_tol` relative tolerance, only when one side is
    written as a decimal.
    """
    pred_text, gold_text = normalize_answer(pred), normalize_answer(gold)
    if not pred_text or not gold_text:
        return False
    if pred_text == gold_text:
        return True
    if _INTEGER.fullmatch(pred_text) and _INTEGER.fullmatch(gold_text):
        # Two integer literals: equal exactly or not at all (skips a ~50 ms symbolic parse per wrong answer).
        return int(pred_text) == int(gold_text)
    pred_parsed, gold_parsed = parse_answer(pred_text), parse_answer(gold_text)
    if verify(gold_parsed, pred_parsed, timeout_seconds=None):
        return True
    if imaginary_unit_equivalent(pred_parsed, gold_parsed):
        return True
    return numerically_close(pred_text, pred_parsed, gold_text, gold_parsed, rel_tol)


def normalize_answer(answer: str) -> str:
    """Rule 1's canonical spelling of an answer: notation that does not change its meaning removed.

    Drops `$`, `\\$`, `\\left`/`\\right`, spacing commands, text wrappers (`\\text{}`, `\\mathrm{}`,
    `\\mbox{}`, ...), a trailing ".", degree marks, trailing units and thousands separators; spells
    `\\dfrac`/`\\tfrac` as `\\frac`, the unicode minus as "-", `%` as `\\%`, `1.5e3` as
    `1.5\\times10^{3}`, `\\varnothing` as `\\emptyset`, `(B)` as `B`; strips a single-variable
    assignment `x =`; keeps a space only between two letters or digits; lower-cases word answers.
    """
    text = answer.replace("\u2212", "-").replace("\\$", "").replace("$", "")
    text = INVISIBLE_COMMAND.sub("", SIZED_DELIMITER.sub("", text))
    text = unwrap_text(text)
    text = SPACING_COMMAND.sub(lambda match: match.group() if match.group() == "\\\\" else " ", text)
    text = WHITESPACE.sub(" ", text).strip()
    text = FRACTION_VARIANT.sub(r"\\frac", text)
    text = EMPTY_SET.sub(r"\\emptyset", text)
    text = DEGREE_MARK.sub("", text)
    text = BARE_PERCENT.sub(r"\\%", text)
    text = strip_trailing_dot(text)
    text = TRAILING_UNIT.sub("", text).rstrip()
    text = strip_assignment(text)
    text = join_thousands(text)
    text = E_NOTATION.sub(r"\1\\times10^{\2}", text)
    text = strip_choice_parentheses(text)
    text = LOOSE_SPACE.sub("", text)
    if PLAIN_TEXT.fullmatch(text) and WORD.search(text):
        text = text.lower()
    return text


def unwrap_text(text: str) -> str:
    """Replaces `\\text{...}`-style wrappers by their content, innermost first, a few levels deep."""
    for _ in range(TEXT_WRAPPER_MAX_NESTING):
        unwrapped = TEXT_WRAPPER.sub(r" \1 ", text)
        if unwrapped == text:
            break
        text = unwrapped
    return text


def strip_trailing_dot(text: str) -> str:
    """Drops one sentence-ending "." (and the space before it)."""
    return text[:-1].rstrip() if text.endswith(".") else text


def join_thousands(text: str) -> str:
    """Removes thousands separators: `1{,}000` and `1 000` anywhere; `1,000` only as the whole answer.

    Only runs of 3-digit groups count, so tuples and lists such as `(1,2)` or `1, 2, 3` are untouched.
    """
    text = BRACED_THOUSANDS_COMMA.sub("", text)
    text = SPACED_THOUSANDS.sub(lambda match: match.group().replace(" ", ""), text)
    if COMMA_GROUPED_NUMBER.fullmatch(text):
        text = text.replace(",", "")
    return text


def strip_assignment(text: str) -> str:
    """`x = 5` -> `5`: drops a single-variable assignment when the rest holds no other relation."""
    prefix = ASSIGNMENT_PREFIX.match(text)
    if prefix and not RELATION.search(text, prefix.end()):
        return text[prefix.end() :]
    return text


def strip_choice_parentheses(text: str) -> str:
    """`(B)` -> `B`: a multiple-choice letter in parentheses."""
    choice = CHOICE_LETTER.fullmatch(text)
    return choice[1] if choice else text


def parse_answer(text: str) -> list:
    """math-verify's reading of one answer through its LaTeX parser only, with its own timeout off."""
    return parse("\\boxed{" + text + "}", extraction_config=LATEX_ONLY, parsing_timeout=None)


def imaginary_unit_equivalent(pred_parsed: list, gold_parsed: list) -> bool:
    """Rule 2, second try: when a side's only free symbol is `i`, reads it as sqrt(-1) (`e^{i\\pi}` = -1)."""
    pred_expr, gold_expr = first_expression(pred_parsed), first_expression(gold_parsed)
    if pred_expr is None or gold_expr is None:
        return False
    free_symbols = pred_expr.free_symbols | gold_expr.free_symbols
    if not free_symbols or any(symbol.name != "i" for symbol in free_symbols):
        return False
    substitution = {symbol: sympy.I for symbol in free_symbols}
    return verify(gold_expr.xreplace(substitution), pred_expr.xreplace(substitution), timeout_seconds=None)


def first_expression(parsed: list) -> sympy.Expr | None:
    """The sympy expression math-verify parsed, or None when it parsed none (or a set, matrix, relation)."""
    expr = parsed[0] if parsed else None
    return expr if isinstance(expr, sympy.Expr) else None


def numerically_close(pred_text: str, pred_parsed: list, gold_text: str, gold_parsed: list, rel_tol: float) -> bool:
    """Rule 3: |a - b| <= rel_tol * max(|a|, |b|) for two real numbers, one of them written as a decimal."""
    if not (is_decimal(pred_text, pred_parsed) or is_decimal(gold_text, gold_parsed)):
        return False
    pred_value, gold_value = real_value(pred_parsed), real_value(gold_parsed)
    if pred_value is None or gold_value is None:
        return False
    return bool(abs(pred_value - gold_value) <= rel_tol * max(abs(pred_value), abs(gold_value)))


def is_decimal(text: str, parsed: list) -> bool:
    """Whether an answer is written with a decimal point, so that it is itself an approximation."""
    expr = first_expression(parsed)
    return bool(DECIMAL_POINT.search(text)) or (expr is not None and expr.has(sympy.Float))


def real_value(parsed: list) -> sympy.Float | None:
    """The answer as a finite real float, or None (symbols, sets, complex, infinite or undefined values).

    math-verify keeps a percent as `x * UnevaluatedExpr(1/100)`; the wrapper is dropped so that it evaluates.
    """
    expr = first_expression(parsed)
    if expr is None or expr.free_symbols:
        return None
    try:
        value = expr.replace(sympy.UnevaluatedExpr, lambda wrapped: wrapped).evalf(EVALF_DIGITS)
    except Exception:  # noqa: BLE001 - sympy fails in many ways on odd input; no value means no tolerance rule
        return None
    return value if isinstance(value, sympy.Float) and value.is_finite else None
