"""The official detokenizers on lines in each corpus's real format, with hand-written outputs.

The quirks of the official rules are asserted too (they change the zero-shot text, so they are
part of the protocol): PTB's repeated ``N`` replacement, LM1B gluing an opening single quote to
the previous word, WikiText's ``" N "`` rule rewriting AG News's "T N" abbreviation.
"""

import pytest

from mdlm_jax.data.detokenizers import DETOKENIZERS, get_detokenizer

CASES = {
    "wikitext": [  # wiki.test.raw lines, newline kept as the HF rows keep it
        (" = Robert Boulter = \n", " = Robert Boulter =\n"),
        (" = = Career = = \n", " == Career ==\n"),
        (" = = = 2000 – 2005 = = = \n", " === 2000 – 2005 ===\n"),
        (" Robert Boulter is an English film , television and theatre actor . He had a guest @-@ starring "
         "role on the television series The Bill in 2000 . \n",
         " Robert Boulter is an English film, television and theatre actor. He had a guest-starring "
         "role on the television series The Bill in 2000.\n"),
        (" the 1 @,@ 000 @.@ 5 km ( 620 mi ) route ; it was \" very long \" \n",
         " the 1,000.5 km (620 mi) route; it was \"very long\"\n"),
        (" it 's the players ' union at 5 ° C \n", " it's the players' union at 5°C\n"),
        ("", ""),
    ],
    "ptb": [  # ptb.*.txt sentences (stripped, as the HF rows are)
        ("no it was n't black monday", "no it wasn't black monday"),
        ("the company 's $ N million loss", "the company's $1 million loss"),
        ("<unk> said the N N index fell", "? said the 1 1 index fell"),
        ("investors ' money rose to a N\\/N share", "investors' money rose to a N/N share"),
    ],
    "lm1b": [  # news.en-* lines: one tokenized sentence each
        ('He said : " We are ready . "', 'He said: "We are ready."'),
        ("Is it £ 5 or $ 6 ?", "Is it £5 or $6?"),
        ("The company 's shares rose ( again ) , analysts said !", "The company's shares rose (again), analysts said!"),
        ("See http : / / www.example.com / news for more .", "See http://www.example.com/news for more."),
        # Official quirks: a number before the final stop keeps its space; an opening quote is glued.
        ("It cost $ 10.50 .", "It cost $10.50 ."),
        ("they are 'disappointed ' now", "they are'disappointed ' now"),
    ],
    "lambada": [  # OpenAI's lambada_test.jsonl 'text' values
        ("\u201cHello,\u201d she said.\n", '\n"Hello," she said.'),
        ("  plain passage ", "\nplain passage"),
    ],
    "wikitext+lm1b": [  # scientific papers' articles and AG News rows
        ("patients ( n = 120 ) were enrolled in the study . the mean age was 45 years .",
         "patients (n = 120) were enrolled in the study. the mean age was 45 years."),
        ("Fears for T N pension after talks Unions representing workers at Turner   Newall say they are "
         "'disappointed' after talks with stricken parent firm Federal Mogul.",
         "Fears for T 1 pension after talks Unions representing workers at Turner   Newall say they are"
         "'disappointed' after talks with stricken parent firm Federal Mogul."),
    ],
}


@pytest.mark.parametrize("name,raw,expected", [(n, r, e) for n, cases in CASES.items() for r, e in cases])
def test_detokenizer(name, raw, expected):
    assert get_detokenizer(name)(raw) == expected


def test_registry():
    assert DETOKENIZERS["none"]("a , b") == "a , b"
    with pytest.raises(ValueError, match="Unknown detokenizer 'moses'"):
        get_detokenizer("moses")
