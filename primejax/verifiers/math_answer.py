"""Final-answer extraction from a math response (SPEC §7), after the reference's `match_answer`.

Two rules, tried in order:

1. the content of the last `\\boxed{...}` or `\\fbox{...}` in the response, found by brace matching
   (or the token after a brace-less `\\boxed 7`);
2. otherwise the text after the last "answer is" marker ("final answer is", "the answer is",
   "answer:", ...), cut at the end of its sentence, taking the first `$...$` math span if there is one.

The reference's last resort, the text after the last "is " or "=" of a marker-less response, is
deliberately left out: it rewards answers the response never committed to.

Everything here runs in time linear in the response length, whatever the response holds.
"""

from __future__ import annotations

import re

BOX_COMMANDS = ("\\boxed", "\\fbox")
ANSWER_MARKERS = re.compile(
    r"final answer is|final answer:|the answer is|answer is|answer:|answers are",
    re.IGNORECASE,
)
# Characters that matter to brace matching: an escaped character (`\{`, `\}`, `\\`) or a brace.
BRACE_TOKENS = re.compile(r"\\[\s\S]|[{}]")
SENTENCE_END = re.compile(r"\.(?=\s)")
BARE_BOX_ARGUMENT = re.compile(r"[^\s$]*")
UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def extract_answer(response: str) -> str | None:
    """The final answer a response commits to, or None when it states none.

    Rule 1 (last box) wins over rule 2 (answer markers); an empty or unbalanced last box falls
    through to rule 2.
    """
    boxed = last_box_content(response)
    if boxed:
        return boxed
    return marked_answer(response)


def last_box_content(response: str) -> str | None:
    """Rule 1: the stripped content of the last `\\boxed`/`\\fbox`, whichever occurs later.

    `\\boxed{...}` is read by brace matching (escaped braces `\\{`, `\\}` do not count); `\\boxed 7`
    takes the next token, up to whitespace or `$`. None when there is no box, or when the last one is
    unbalanced or is no box at all (`\\boxedfoo`).
    """
    start, command = max((response.rfind(name), name) for name in BOX_COMMANDS)
    if start < 0:
        return None
    rest = response[start + len(command) :]
    argument = rest.lstrip()
    if argument.startswith("{"):
        opening = len(response) - len(argument)
        closing = matching_brace(response, opening)
        return None if closing is None else response[opening + 1 : closing].strip()
    if rest[:1].isalpha():
        return None
    return BARE_BOX_ARGUMENT.match(argument).group() or None


def matching_brace(text: str, opening: int) -> int | None:
    """Index of the brace closing the one at `text[opening]`, or None if it is never closed.

    One left-to-right pass with a depth counter, so deep nesting costs no recursion.
    """
    depth = 0
    for token in BRACE_TOKENS.finditer(text, opening):
        if token.group() == "{":
            depth += 1
        elif token.group() == "}":
            depth -= 1
            if depth == 0:
                return token.start()
    return None


def marked_answer(response: str) -> str | None:
    """Rule 2: the answer stated after the last "answer is"-type marker, or None.

    Takes the rest of the marker's line, drops a leading ":" and spaces, cuts at the first sentence end
    (a "." followed by whitespace, or a final "."; a decimal point is neither), then keeps the first
    `$...$` or `\\(...\\)` math span if the text has one. Surrounding `$` and markdown `*` go.
    """
    last_marker = None
    for last_marker in ANSWER_MARKERS.finditer(response):
        pass
    if last_marker is None:
        return None
    line_end = response.find("\n", last_marker.end())
    text = response[last_marker.end() : line_end if line_end >= 0 else len(response)]
    text = text.lstrip(": \t*")
    sentence_end = SENTENCE_END.search(text)
    if sentence_end:
        text = text[: sentence_end.start()]
    text = text.rstrip().removesuffix(".")
    span = first_math_span(text)
    if span is not None:
        text = span
    text = text.strip().strip("$*").strip()
    return text or None


def first_math_span(text: str) -> str | None:
    """Content of the earliest complete `$...$` (or `$$...$$`) or `\\(...\\)` span in `text`, or None.

    An escaped dollar `\\$` is a currency sign, not a delimiter.
    """
    spans = []
    dollar_open = UNESCAPED_DOLLAR.search(text)
    if dollar_open:
        content_start = dollar_open.end() + 1 if text.startswith("$$", dollar_open.start()) else dollar_open.end()
        dollar_close = UNESCAPED_DOLLAR.search(text, content_start)
        if dollar_close:
            spans.append((dollar_open.start(), text[content_start : dollar_close.start()]))
    paren_open = text.find("\\(")
    if paren_open >= 0:
        paren_close = text.find("\\)", paren_open + 2)
        if paren_close >= 0:
            spans.append((paren_open, text[paren_open + 2 : paren_close]))
    return min(spans)[1] if spans else None
