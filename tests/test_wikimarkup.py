"""The markup stripper (pipeline.sources.wikimarkup) on crafted wikitext."""

from __future__ import annotations

import pytest

from pipeline.sources import wikimarkup

STRIP_CASES = [
    ("nested templates", "a {{outer|x={{inner|{{deep}}}}|y}} b", "a b"),
    ("template param refs", "a {{t|{{{1|default}}}}} b", "a b"),
    ("table with a template", "before\n{| class=x\n|-\n| {{flag|UK}} || 1\n|}\nafter", "before\nafter"),
    ("nested tables", "x\n{|\n| a\n{|\n| inner\n|}\n|}\ny", "x\ny"),
    ("indented table", "x\n:{|\n| a\n|}\ny", "x\ny"),
    ("infobox ending in |}}", "{{Infobox\n| name = A\n|}}\nText.", "Text."),
    ("unclosed template is literal", "a {{ b c", "a b c"),
    ("stray closer", "a }} b", "a b"),
    ("refs", 'Fact.<ref name="a">{{cite|x}} [http://e.org]</ref> More.<ref name="a" /> End', "Fact. More. End"),
    ("comments", "a <!-- hidden\nlines --> b <!-- unclosed", "a b"),
    ("other tags keep text", "<div style='x'>kept</div> <small>too</small> a<br/>b", "kept too a b"),
    ("math and gallery", "x <math>\\frac{1}{2}</math> y <gallery>\nA.jpg|c\n</gallery> z", "x y z"),
    ("links", "[[Plain]], [[target|label]], [[dog]]s, [[a (b)|]]", "Plain, label, dogs, a"),
    ("file with nested links", "x [[File:A.jpg|thumb|A [[b|B]] in 1927 [above], [[c]]]] y", "x y"),
    ("category and image", "x [[Category:Foo|key]] [[Image:b.png]] [[ category : Bar ]] y", "x y"),
    ("visible category link", "see [[:Category:Foo|the category]]", "see the category"),
    ("interlanguage", "x\n[[de:Anarchismus]]\n[[simple:Anarchism]]", "x"),
    ("interwiki with text", "a [[wikt:word|word]] b", "a word b"),
    ("external links", "[http://a.org Site A] and [https://b.org] and //c [//d.org D]", "Site A and and //c D"),
    ("bold italic", "'''bold''' ''it'' '''''both''''' l'amour", "bold it both l'amour"),
    ("headings", "== History ==\ntext\n=== Early ===", "History\ntext\nEarly"),
    ("lists", "* one\n** two\n# three\n: indent\n; term", "one\ntwo\nthree\nindent\nterm"),
    ("rule and magic", "a\n----\n__NOTOC__b", "a\nb"),
    ("entities", "a&nbsp;b &ndash; c &amp; d", "a b – c & d"),
    ("empty parens", "born ({{birth date|1900}}) in X", "born in X"),
    ("inline lang", "the Greek {{lang|grc|ἀναρχία}} and {{nowrap|1 May}}", "the Greek ἀναρχία and 1 May"),
]


@pytest.mark.parametrize("wikitext,expected", [c[1:] for c in STRIP_CASES], ids=[c[0] for c in STRIP_CASES])
def test_strip_markup(wikitext, expected):
    assert wikimarkup.strip_markup(wikitext) == expected


def test_thousands_of_unclosed_templates_do_not_recurse():
    assert wikimarkup.strip_markup("x {{ " * 5000 + "end") == "x " * 4999 + "x end"
