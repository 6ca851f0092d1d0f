"""The official detokenizers (MDLM ``dataloader.py``): undo each corpus's tokenisation before
re-tokenising with the model's tokenizer.

Each is a fixed sequence of rewrite rules applied in order; the order matters (for example
WikiText's ``" @-@ "`` must be joined before the generic ``" , "`` rule runs). The rules are the
official ones, quirks included, because zero-shot perplexities depend on the exact text; the
comments point out the quirks rather than fixing them.
"""

from __future__ import annotations

import re
from typing import Callable

# A rule is (pattern, replacement, is_regex); literal rules use str.replace.
Rule = tuple[str, str, bool]


def _apply(rules: tuple[Rule, ...], text: str) -> str:
    for pattern, replacement, is_regex in rules:
        text = re.sub(pattern, replacement, text) if is_regex else text.replace(pattern, replacement)
    return text


def _literal(*pairs: tuple[str, str]) -> tuple[Rule, ...]:
    return tuple((a, b, False) for a, b in pairs)


def _regex(*pairs: tuple[str, str]) -> tuple[Rule, ...]:
    return tuple((a, b, True) for a, b in pairs)


# A quoted or bracketed span loses the spaces just inside its delimiters: "( a b )" -> "(a b)".
# WikiText's version is lazy and tolerates any amount of whitespace.
def _wikitext_span(open_: str, close: str) -> Rule:
    o, c = re.escape(open_), re.escape(close)
    return (rf"{o}\s*([^{c}]*?)\s*{c}", open_ + r"\1" + close, True)


_WIKITEXT: tuple[Rule, ...] = (
    _literal(("s '", "s'"))
    # Official quirk: a pattern of literal slashes that replaces a match with the text "/'[0-9]/".
    # It (practically) never matches WikiText; kept so that the output is identical.
    + _regex((r"/' [0-9]/", r"/'[0-9]/"))
    # Number separators: 1 @,@ 000 -> 1,000; 3 @.@ 5 -> 3.5; well @-@ known -> well-known.
    + _literal((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))
    + _literal((" : ", ": "), (" ; ", "; "), (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", "))
    + (_wikitext_span("(", ")"), _wikitext_span("[", "]"), _wikitext_span("{", "}"),
       _wikitext_span('"', '"'), _wikitext_span("'", "'"))
    # Section markers "= = Heading = =" -> "== Heading ==" (longest first).
    + _literal(("= = = =", "===="), ("= = =", "==="), ("= =", "=="))
    + _literal((" \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"), (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s"))
)

_PTB: tuple[Rule, ...] = (
    _literal((" 's", "'s"), ("s ' ", "s' "), (" n't", "n't"), (" \n ", "\n"), ("\\/", "/"))
    # PTB writes every number as N; official replaces it ten times (overlapping " N N " runs).
    + _literal(*[(" N ", " 1 ")] * 10)
    + _literal(("$ 1", "$1"), ("# 1", "#1"), ("<unk>", "?"))
)

_LM1B: tuple[Rule, ...] = (
    _literal(("http : / / ", "http://"), ("https : / / ", "https://"))
    + _regex((r" '(\w+)", r"'\1"),              # clitics: "it 's" -> "it's" (also opens quotes)
             (r" (\w+) \. ", r" \1. "),          # a full stop after a word mid-line
             (r" (\w+) \.$", r" \1."))           # and at the end of the line
    + _literal((" ? ", "? ")) + _regex((r" \?$", "?"))
    + _literal((" ! ", "! ")) + _regex((r" \!$", "!"))
    + _literal((" , ", ", "), (" : ", ": "), (" ; ", "; "), (" / ", "/"))
    + _regex((r'" ([^"]+) "', r'"\1"'), (r"' ([^']+) '", r"'\1'"),
             (r"\( ([^()]+) \)", r"(\1)"), (r"\[ ([^\[\]]+) \]", r"[\1]"))
    + _literal(("$ ", "$"), ("\N{POUND SIGN} ", "\N{POUND SIGN}"))
)


def wikitext_detokenizer(text: str) -> str:
    """WikiText (2 and 103): joins ``@-@ @,@ @.@``, punctuation, brackets, quotes and headings."""
    return _apply(_WIKITEXT, text)


def ptb_detokenizer(text: str) -> str:
    """Penn Treebank: clitics, ``\\/``, ``N`` -> ``1``, ``<unk>`` -> ``?``."""
    return _apply(_PTB, text)


def lm1b_detokenizer(text: str) -> str:
    """One Billion Words: URLs, clitics, punctuation, quotes, brackets, currency."""
    return _apply(_LM1B, text)


def lambada_detokenizer(text: str) -> str:
    """LAMBADA (OpenAI's jsonl): curly double quotes -> straight, stripped, one leading newline."""
    text = text.replace("\N{LEFT DOUBLE QUOTATION MARK}", '"').replace("\N{RIGHT DOUBLE QUOTATION MARK}", '"')
    return "\n" + text.strip()


def wikitext_lm1b_detokenizer(text: str) -> str:
    """WikiText's rules, then LM1B's: the official choice for scientific papers (and, per the
    paper, AG News)."""
    return lm1b_detokenizer(wikitext_detokenizer(text))


def identity(text: str) -> str:
    """No detokenization."""
    return text


DETOKENIZERS: dict[str, Callable[[str], str]] = {
    "none": identity,
    "wikitext": wikitext_detokenizer,
    "ptb": ptb_detokenizer,
    "lm1b": lm1b_detokenizer,
    "lambada": lambada_detokenizer,
    "wikitext+lm1b": wikitext_lm1b_detokenizer,
}


def get_detokenizer(name: str) -> Callable[[str], str]:
    """The detokenizer registered as ``name``."""
    if name not in DETOKENIZERS:
        raise ValueError(f"Unknown detokenizer {name!r}; choose one of {sorted(DETOKENIZERS)}.")
    return DETOKENIZERS[name]
