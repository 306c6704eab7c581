#!/usr/bin/env python3
"""Generate mtkit's small embedded default corpus: English -> "Zedish".

The corpus is synthetic and produced entirely by the grammar in this file, so
it is our own data, free of licence constraints, small enough to ship in the
repository and to train on in minutes, yet rich enough that a model needs
attention, agreement and a correct end-of-sentence decision to translate it.

Source side (``en``) is a controlled subset of English; target side (``zd``)
is Zedish, an invented language whose translation is a deterministic function
of the English sentence.  Zedish word stems are drawn from syllables with a
fixed lexicon seed, so the language itself never changes; ``--seed`` only
changes which sentences are sampled.

English grammar (present tense, third person only)::

    S       -> CLAUSE "." | CLAUSE "and" CLAUSE "." | QUESTION "?"
    CLAUSE  -> NP [does not] VERB [NP] PP*
    NP      -> [DET] [DIGITS] [ADJ] [COLOR] NOUN [PP | REL | "and" NP]
    PP      -> PREP NP
    REL     -> "that" VERB [NP]       (subject relative)
             | "that" NP VERB         (object relative)
    QUESTION-> ("Does" | "Do") NP VERB-base [NP] PP*

Attachment is fixed by construction so that every English string has exactly
one reading: noun-modifying PPs and relative clauses only occur on subjects
(one of the two, never both), every PP after the verb modifies the verb, PP
objects and coordinated NPs are plain, and a clause with a relative clause on
its object takes no further PPs.  The generator asserts that no English
sentence is ever produced with two different translations.

Zedish rules:

* Word order is verb-final: SUBJECT OBJECT ADVERBIAL-PPs [nu] VERB.
* Prepositions become postpositions: "in the house" -> "sena stivor zva".
  A PP modifying a noun is placed *before* its noun phrase.
* Noun phrases are DET NOUN ADJ* NUMBER [REL]: adjectives follow the noun in
  mirrored order ("the big red dog" -> "seni logro skibrali ploki", i.e.
  "the dog red big"), numbers follow the
  adjectives, relative clauses follow the noun and are verb-final themselves,
  introduced by "ke" (subject gap) or "ko" (object gap).
* Every noun has a gender (0 or 1, fixed per noun).  Determiners and
  adjectives take the gender suffix "-a" or "-i"; plural nouns take "-n"
  (after a vowel) or "-en" (after a consonant).
* Verbs take "-et" for a singular and "-an" for a plural subject;
  coordinated subjects ("the dog and the cat") are plural.  Negation
  ("does not") is the particle "nu" right before the verb.
* Numbers 1-99 are written in English as digits and in Zedish as words with
  the units before the tens, joined by "ta" (21 -> "vun ta pler", i.e.
  "one-and-twenty").
* Yes/no questions keep declarative order and add the final particle "ka".
* Both sides start with a capital letter and end with "." or "?" attached to
  the last word: the text is natural, untokenised text, as sentencepiece and
  sacrebleu expect.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

LEXICON_SEED = 20_251_122
"""Seed of the Zedish word generator; fixed so the language never changes."""

MAX_WORDS = 30
"""Longest sentence (whitespace-separated words) kept on either side."""

MAX_FILE_BYTES = 1_000_000

# --------------------------------------------------------------------------
# English vocabulary (words are whitespace-separated to keep the file short)
# --------------------------------------------------------------------------

ANIMATE = ("person", "animal")
CONCRETE = ("person", "animal", "thing", "food")
INANIMATE = ("thing", "food", "place")
CATEGORIES = ("person", "animal", "thing", "food", "place")

NOUNS: dict[str, str] = {
    "person": """man woman boy girl child teacher doctor farmer king queen student
        baker driver singer painter sailor soldier nurse friend neighbor artist
        judge cook pilot writer dancer hunter fisherman guard merchant""",
    "animal": """dog cat bird horse cow mouse fox wolf bear rabbit lion tiger duck
        goat pig monkey elephant frog snake owl donkey camel spider bee turtle""",
    "thing": """ball box cup table chair key bag hat coat shoe bottle picture
        clock lamp knife pen ring basket boat car bicycle stone flower tree
        window door bed umbrella toy rope candle mirror glass ladder drum kite
        book letter map newspaper""",
    "food": "apple pear egg cake banana carrot potato tomato cookie sandwich lemon onion pie plum",
    "place": """house garden city village market river forest school park kitchen
        church bridge road lake mountain field shop station library hospital
        beach castle farm island street room office hill harbor valley""",
}

IRREGULAR_PLURALS = {
    "man": "men",
    "woman": "women",
    "child": "children",
    "mouse": "mice",
    "wolf": "wolves",
    "knife": "knives",
    "fisherman": "fishermen",
    "potato": "potatoes",
    "tomato": "tomatoes",
}

# Transitive verbs, grouped by the noun categories they accept as objects.
TRANSITIVE_VERBS: dict[tuple[str, ...], str] = {
    CONCRETE: "see like find watch want love hate count touch draw forget remember",
    ANIMATE: "follow hear help call chase feed miss",
    ("thing", "food"): "carry buy sell take hold need throw bring wash hide keep drop",
    ("thing",): "paint push pull break fix lift kick build",
    ("thing", "animal"): "catch",
    ("food",): "eat cook",
    ("person",): "meet teach",
    ("person", "place"): "visit",
}

INTRANSITIVE_VERBS = """sleep run walk swim sing dance laugh cry wait work play sit
    stand jump smile shout rest fall arrive live travel listen talk climb dream
    whistle"""

# Adjectives, grouped by the noun categories they may describe.
ADJECTIVES: dict[tuple[str, ...], str] = {
    CATEGORIES: "big small old tall short strange beautiful ugly dirty wet dry tiny huge cold warm",
    ANIMATE: """young happy sad hungry tired angry brave clever lazy busy famous
        kind friendly gentle proud rich poor wild shy quiet loud strong weak""",
    INANIMATE: "new heavy cheap expensive round soft broken empty",
}

COLORS = "red blue green yellow black white brown gray pink purple orange golden"

# Prepositions, grouped by the noun categories they take as objects.
PREPOSITIONS: dict[tuple[str, ...], str] = {
    ("place", "thing"): "in on under above below into around",
    ("place", "thing", "person", "animal"): "near behind beside",
    ("person", "animal", "thing"): "with without",
    ("place", "person"): "from to",
    ("place",): "across through along",
    ("place", "person", "animal"): "toward",
}

NOUN_MODIFYING_PREPS = "in on under above below near behind beside with without from"
"""Prepositions that read naturally inside a noun phrase ("the man from the city")."""

# --------------------------------------------------------------------------
# Zedish fixed grammar words
# --------------------------------------------------------------------------

GENDER_SUFFIX = ("a", "i")
VERB_SUFFIX = {False: "et", True: "an"}  # keyed by "subject is plural"
AND_ZD = "pa"
NEGATION_ZD = "nu"
QUESTION_ZD = "ka"
SUBJ_REL_ZD = "ke"
OBJ_REL_ZD = "ko"
NUMBER_JOIN_ZD = "ta"

# English determiner -> (singular form, plural form, Zedish stem).
DETERMINERS: dict[str, tuple[str | None, str | None, str]] = {
    "the": ("the", "the", "sen"),
    "a": ("a", None, "mor"),
    "this": ("this", "these", "vel"),
    "my": ("my", "my", "min"),
    "some": (None, "some", "sul"),
}

ONSETS = "b d f g k l m n p r s t v z br dr gr kr tr pl sk st zv"
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o")  # a, e, o twice: more frequent
CODAS = ("l", "m", "n", "r", "s", "k", "t")

# --------------------------------------------------------------------------
# Lexicon
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Noun:
    """A noun with everything needed to inflect it on both sides."""

    en: str
    en_plural: str
    zd: str
    gender: int
    category: str


@dataclass(frozen=True)
class Verb:
    """A verb; ``objects`` lists allowed object categories (empty: intransitive)."""

    en: str
    en_3sg: str
    zd: str
    objects: tuple[str, ...]


@dataclass(frozen=True)
class Entry:
    """An adjective or preposition: one Zedish stem and the nouns it goes with."""

    en: str
    zd: str
    fits: tuple[str, ...]


@dataclass(frozen=True)
class Lexicon:
    """All words of both languages, built once from ``LEXICON_SEED``."""

    nouns: dict[str, tuple[Noun, ...]]
    transitive: tuple[Verb, ...]
    intransitive: tuple[Verb, ...]
    adjectives: tuple[Entry, ...]
    colors: tuple[Entry, ...]
    preps: tuple[Entry, ...]
    modifier_preps: tuple[Entry, ...]  # the subset allowed inside noun phrases
    units: tuple[str, ...]  # Zedish 1..9 (index 0 is 1)
    tens: tuple[str, ...]  # Zedish 10, 20, ..., 90


def english_plural(noun: str) -> str:
    """Pluralise a regular English noun (irregulars are looked up first)."""
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def english_3sg(verb: str) -> str:
    """Third-person singular present; same spelling rules as noun plurals."""
    if verb.endswith(("s", "x", "ch", "sh")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def zedish_plural(stem: str) -> str:
    """Zedish plural noun: "-n" after a vowel, "-en" after a consonant."""
    return stem + ("n" if stem[-1] in "aeiou" else "en")


class WordMaker:
    """Draws pronounceable, pairwise distinct Zedish stems.

    Every stem is checked together with all of its inflected forms, so no
    surface word of Zedish can belong to two different lexemes (which keeps
    the Zedish side unambiguous and the target vocabulary clean).
    """

    def __init__(self, rng: random.Random, reserved: Sequence[str]) -> None:
        self.rng = rng
        self.onsets = ONSETS.split()
        self.taken: set[str] = set(reserved)

    def syllable(self) -> str:
        """One consonant-vowel syllable."""
        return self.rng.choice(self.onsets) + self.rng.choice(VOWELS)

    def draw(self, syllables: Sequence[int], closed: bool, suffixes: Sequence[str]) -> str:
        """Draw an unused stem; ``closed`` forces a final consonant."""
        while True:
            stem = "".join(self.syllable() for _ in range(self.rng.choice(syllables)))
            if closed or self.rng.random() < 0.35:
                stem += self.rng.choice(CODAS)
            forms = [stem] + [stem + s for s in suffixes]
            if len(stem) >= 2 and not any(f in self.taken for f in forms):
                self.taken.update(forms)
                return stem

    def noun(self) -> str:
        """A noun stem, two or three syllables, with free final sound."""
        while True:
            stem = self.draw((2, 2, 3), closed=False, suffixes=())
            plural = zedish_plural(stem)
            if plural not in self.taken:
                self.taken.add(plural)
                return stem


def grouped(table: dict[tuple[str, ...], str]) -> list[tuple[str, tuple[str, ...]]]:
    """Flatten a {categories: "word word ..."} table into (word, categories)."""
    return [(word, cats) for cats, words in table.items() for word in words.split()]


def english_words() -> list[str]:
    """Every English surface word, reserved so Zedish never reuses one."""
    words = ["and", "that", "does", "do", "not", "an"]
    for singular, plural, _ in DETERMINERS.values():
        words += [w for w in (singular, plural) if w]
    for nouns in NOUNS.values():
        for noun in nouns.split():
            words += [noun, english_plural(noun)]
    for verb, _ in grouped(TRANSITIVE_VERBS) + [(v, ()) for v in INTRANSITIVE_VERBS.split()]:
        words += [verb, english_3sg(verb)]
    words += [adj for adj, _ in grouped(ADJECTIVES)] + COLORS.split()
    return words + [prep for prep, _ in grouped(PREPOSITIONS)]


def build_lexicon() -> Lexicon:
    """Invent Zedish words for the whole English vocabulary, deterministically."""
    rng = random.Random(LEXICON_SEED)
    fixed = [AND_ZD, NEGATION_ZD, QUESTION_ZD, SUBJ_REL_ZD, OBJ_REL_ZD, NUMBER_JOIN_ZD]
    fixed += [stem + g for *_, stem in DETERMINERS.values() for g in GENDER_SUFFIX]
    fixed += [stem for *_, stem in DETERMINERS.values()]
    maker = WordMaker(rng, fixed + english_words())
    units = tuple(maker.draw((1,), closed=False, suffixes=()) for _ in range(9))
    tens = tuple(maker.draw((1,), closed=True, suffixes=()) for _ in range(9))
    preps = tuple(
        Entry(prep, maker.draw((1,), closed=False, suffixes=()), fits)
        for prep, fits in grouped(PREPOSITIONS)
    )
    modifier_preps = tuple(p for p in preps if p.en in NOUN_MODIFYING_PREPS.split())
    nouns = {
        cat: tuple(
            Noun(n, english_plural(n), maker.noun(), rng.randrange(2), cat) for n in words.split()
        )
        for cat, words in NOUNS.items()
    }
    verb_suffixes = tuple(VERB_SUFFIX.values())
    transitive = tuple(
        Verb(verb, english_3sg(verb), maker.draw((1, 2), True, verb_suffixes), objects)
        for verb, objects in grouped(TRANSITIVE_VERBS)
    )
    intransitive = tuple(
        Verb(verb, english_3sg(verb), maker.draw((1, 2), True, verb_suffixes), ())
        for verb in INTRANSITIVE_VERBS.split()
    )
    adjectives = tuple(
        Entry(adj, maker.draw((1, 2), True, GENDER_SUFFIX), fits)
        for adj, fits in grouped(ADJECTIVES)
    )
    colors = tuple(
        Entry(color, maker.draw((1, 2), True, GENDER_SUFFIX), CATEGORIES)
        for color in COLORS.split()
    )
    return Lexicon(
        nouns, transitive, intransitive, adjectives, colors, preps, modifier_preps, units, tens
    )


# --------------------------------------------------------------------------
# Syntax trees
# --------------------------------------------------------------------------


@dataclass
class NP:
    """A noun phrase; ``conj`` is a second NP coordinated with "and"."""

    noun: Noun
    plural: bool
    det: str | None = None
    number: int | None = None
    adjectives: tuple[Entry, ...] = ()
    pp: PP | None = None
    rel: Rel | None = None
    conj: NP | None = None

    @property
    def agrees_plural(self) -> bool:
        """Number seen by the verb: coordinated subjects count as plural."""
        return self.plural or self.conj is not None


@dataclass
class PP:
    """A prepositional phrase (a postpositional phrase in Zedish)."""

    prep: Entry
    np: NP


@dataclass
class Rel:
    """A relative clause; ``other`` is its object (subject gap) or subject (object gap)."""

    verb: Verb
    object_gap: bool
    other: NP | None


@dataclass
class Clause:
    """One finite clause with its verb-level (adverbial) PPs."""

    subject: NP
    verb: Verb
    obj: NP | None
    pps: tuple[PP, ...]
    negated: bool = False


@dataclass
class Sentence:
    """One or two coordinated clauses, or a single yes/no question."""

    clauses: tuple[Clause, ...]
    question: bool = False


# --------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------


class Sampler:
    """Draws random syntax trees; all probabilities live here."""

    def __init__(self, lex: Lexicon, rng: random.Random) -> None:
        self.lex = lex
        self.rng = rng
        self.adjectives_for = {
            cat: tuple(a for a in lex.adjectives if cat in a.fits) for cat in CATEGORIES
        }

    def chance(self, p: float) -> bool:
        """True with probability ``p``."""
        return self.rng.random() < p

    def weighted(self, options: Sequence[tuple[T, float]]) -> T:
        """Pick one option by weight (cumulative scan keeps it reproducible)."""
        x = self.rng.random() * sum(w for _, w in options)
        for value, w in options:
            x -= w
            if x < 0:
                return value
        return options[-1][0]

    def number(self) -> int:
        """A cardinal 1-99, biased toward small numbers as in real text."""
        if self.chance(0.5):
            return self.rng.randint(2, 10)
        return self.rng.randint(1, 99)

    def adjectives(self, noun: Noun) -> tuple[Entry, ...]:
        """Zero to two adjectives that suit the noun; English puts color last."""
        quality = self.adjectives_for[noun.category]
        n = self.weighted([(0, 0.5), (1, 0.36), (2, 0.14)])
        if n == 2:
            return (self.rng.choice(quality), self.rng.choice(self.lex.colors))
        if n == 1:
            return (self.rng.choice(quality if self.chance(0.7) else self.lex.colors),)
        return ()

    def simple_np(self, categories: Sequence[str]) -> NP:
        """Determiner, optional number, adjectives and a noun; nothing attached."""
        noun = self.rng.choice(self.lex.nouns[self.rng.choice(categories)])
        adjs = self.adjectives(noun)
        if self.chance(0.08):
            n = self.number()
            if n == 1:
                return NP(noun, False, None, 1, adjs)
            det: list[tuple[str | None, float]] = [
                (None, 0.7),
                ("the", 0.15),
                ("this", 0.08),
                ("my", 0.07),
            ]
            return NP(noun, True, self.weighted(det), n, adjs)
        if self.chance(0.3):
            plural: list[tuple[str | None, float]] = [
                (None, 0.3),
                ("the", 0.35),
                ("this", 0.1),
                ("my", 0.1),
                ("some", 0.15),
            ]
            return NP(noun, True, self.weighted(plural), None, adjs)
        dets: list[tuple[str | None, float]] = [
            ("the", 0.55),
            ("a", 0.3),
            ("this", 0.08),
            ("my", 0.07),
        ]
        return NP(noun, False, self.weighted(dets), None, adjs)

    def pp(self, preps: Sequence[Entry]) -> PP:
        """A PP whose object is a plain NP, so its attachment is never ambiguous."""
        prep = self.rng.choice(preps)
        return PP(prep, self.simple_np(prep.fits))

    def rel(self, head: NP) -> Rel:
        """A relative clause with plain inner NPs that suits the head noun.

        Only animate heads get a subject gap ("the dog that sleeps"); any head
        can be the object of a verb that accepts it ("the cake that ...").
        """
        if head.noun.category not in ANIMATE or self.chance(0.35):
            verbs = [v for v in self.lex.transitive if head.noun.category in v.objects]
            return Rel(self.rng.choice(verbs), True, self.simple_np(ANIMATE))
        if self.chance(0.35):
            return Rel(self.rng.choice(self.lex.intransitive), False, None)
        verb = self.rng.choice(self.lex.transitive)
        return Rel(verb, False, self.simple_np(verb.objects))

    def maybe_conj(self, np: NP, categories: Sequence[str], p: float) -> NP:
        """Coordinate a plain NP with another plain NP with probability ``p``."""
        if self.chance(p):
            np.conj = self.simple_np(categories)
        return np

    def subject(self, rich: bool) -> NP:
        """Subject NP; only subjects may carry a modifying PP or relative clause."""
        np = self.simple_np(ANIMATE)
        if rich and self.chance(0.15):
            np.pp = self.pp(self.lex.modifier_preps)
        elif rich and self.chance(0.14):
            np.rel = self.rel(np)
        else:
            np = self.maybe_conj(np, ANIMATE, 0.12 if rich else 0.0)
        return np

    def clause(self, rich: bool, negation: bool) -> Clause:
        """A clause; ``rich`` allows coordinated NPs and relative clauses."""
        subject = self.subject(rich)
        obj: NP | None = None
        if self.chance(0.62):
            verb = self.rng.choice(self.lex.transitive)
            obj = self.simple_np(verb.objects)
            if rich and self.chance(0.14):
                obj.rel = self.rel(obj)
            else:
                obj = self.maybe_conj(obj, verb.objects, 0.1 if rich else 0.0)
        else:
            verb = self.rng.choice(self.lex.intransitive)
        if obj is not None and obj.rel is not None:
            n_pps = 0  # a later PP could attach to the relative clause's verb
        else:
            n_pps = self.weighted([(0, 0.45), (1, 0.4), (2, 0.15)])
        if obj is None and n_pps == 0 and self.chance(0.5):
            n_pps = 1  # bare "The dog sleeps ." would otherwise dominate
        pps = tuple(self.pp(self.lex.preps) for _ in range(n_pps))
        return Clause(subject, verb, obj, pps, negation and self.chance(0.1))

    def sentence(self) -> Sentence:
        """Top-level choice: question, two coordinated clauses, or one clause."""
        if self.chance(0.1):
            return Sentence((self.clause(rich=True, negation=False),), question=True)
        if self.chance(0.12):
            return Sentence((self.clause(False, True), self.clause(False, True)))
        return Sentence((self.clause(rich=True, negation=True),))


# --------------------------------------------------------------------------
# English rendering
# --------------------------------------------------------------------------


def en_np(np: NP) -> list[str]:
    """English NP: det, digits, adjectives, noun, then PP / relative clause."""
    words: list[str] = []
    if np.number is not None:
        words.append(str(np.number))
    words += [a.en for a in np.adjectives]
    words.append(np.noun.en_plural if np.plural else np.noun.en)
    if np.det is not None:
        form = DETERMINERS[np.det][1 if np.plural else 0]
        assert form is not None, (np.det, np.plural)
        if form == "a" and words[0][0] in "aeiou":
            form = "an"
        words.insert(0, form)
    if np.pp is not None:
        words += [np.pp.prep.en, *en_np(np.pp.np)]
    if np.rel is not None:
        words += en_rel(np.rel, np)
    if np.conj is not None:
        words += ["and", *en_np(np.conj)]
    return words


def en_verb(verb: Verb, plural: bool) -> str:
    """Present-tense verb agreeing with its subject."""
    return verb.en if plural else verb.en_3sg


def en_rel(rel: Rel, head: NP) -> list[str]:
    """English relative clause: "that sees the cat" or "that the cat sees"."""
    if rel.object_gap:
        assert rel.other is not None
        return ["that", *en_np(rel.other), en_verb(rel.verb, rel.other.agrees_plural)]
    words = ["that", en_verb(rel.verb, head.agrees_plural)]
    return words + (en_np(rel.other) if rel.other else [])


def en_clause(clause: Clause, question: bool) -> list[str]:
    """English clause in SVO order, with do-support for questions and negation."""
    plural = clause.subject.agrees_plural
    aux = "do" if plural else "does"
    subject = en_np(clause.subject)
    if question:
        words = [aux, *subject, clause.verb.en]
    elif clause.negated:
        words = [*subject, aux, "not", clause.verb.en]
    else:
        words = [*subject, en_verb(clause.verb, plural)]
    if clause.obj is not None:
        words += en_np(clause.obj)
    for pp in clause.pps:
        words += [pp.prep.en, *en_np(pp.np)]
    return words


def en_sentence(sent: Sentence) -> str:
    """Full English sentence, capitalised and punctuated."""
    words: list[str] = []
    for i, clause in enumerate(sent.clauses):
        if i:
            words.append("and")
        words += en_clause(clause, sent.question)
    return finish(words, "?" if sent.question else ".")


# --------------------------------------------------------------------------
# Zedish rendering
# --------------------------------------------------------------------------


def zd_number(n: int, lex: Lexicon) -> list[str]:
    """Zedish numeral: units before tens, joined by "ta" (like German 21)."""
    tens, units = divmod(n, 10)
    if tens == 0:
        return [lex.units[units - 1]]
    if units == 0:
        return [lex.tens[tens - 1]]
    return [lex.units[units - 1], NUMBER_JOIN_ZD, lex.tens[tens - 1]]


def zd_np(np: NP, lex: Lexicon) -> list[str]:
    """Zedish NP: [PP] det noun adjectives(mirrored) number [relative clause]."""
    g = GENDER_SUFFIX[np.noun.gender]
    words = zd_pp(np.pp, lex) if np.pp is not None else []
    if np.det is not None:
        words.append(DETERMINERS[np.det][2] + g)
    words.append(zedish_plural(np.noun.zd) if np.plural else np.noun.zd)
    words += [a.zd + g for a in reversed(np.adjectives)]
    if np.number is not None:
        words += zd_number(np.number, lex)
    if np.rel is not None:
        words += zd_rel(np.rel, np, lex)
    if np.conj is not None:
        words += [AND_ZD, *zd_np(np.conj, lex)]
    return words


def zd_pp(pp: PP, lex: Lexicon) -> list[str]:
    """Postpositional phrase: the NP first, then the postposition."""
    return [*zd_np(pp.np, lex), pp.prep.zd]


def zd_verb(verb: Verb, plural: bool) -> str:
    """Verb stem plus the subject-number suffix."""
    return verb.zd + VERB_SUFFIX[plural]


def zd_rel(rel: Rel, head: NP, lex: Lexicon) -> list[str]:
    """Verb-final relative clause, "ko" for an object gap, "ke" for a subject gap."""
    if rel.object_gap:
        assert rel.other is not None
        return [OBJ_REL_ZD, *zd_np(rel.other, lex), zd_verb(rel.verb, rel.other.agrees_plural)]
    inner = zd_np(rel.other, lex) if rel.other else []
    return [SUBJ_REL_ZD, *inner, zd_verb(rel.verb, head.agrees_plural)]


def zd_clause(clause: Clause, lex: Lexicon) -> list[str]:
    """Zedish clause: subject, object, adverbial PPs, [nu] verb."""
    words = zd_np(clause.subject, lex)
    if clause.obj is not None:
        words += zd_np(clause.obj, lex)
    for pp in clause.pps:
        words += zd_pp(pp, lex)
    if clause.negated:
        words.append(NEGATION_ZD)
    return [*words, zd_verb(clause.verb, clause.subject.agrees_plural)]


def zd_sentence(sent: Sentence, lex: Lexicon) -> str:
    """Full Zedish sentence; questions add the final particle "ka"."""
    words: list[str] = []
    for i, clause in enumerate(sent.clauses):
        if i:
            words.append(AND_ZD)
        words += zd_clause(clause, lex)
    if sent.question:
        words.append(QUESTION_ZD)
    return finish(words, "?" if sent.question else ".")


def finish(words: list[str], punct: str) -> str:
    """Capitalise the first letter and attach the final punctuation."""
    text = " ".join(words) + punct
    return text[0].upper() + text[1:]


# --------------------------------------------------------------------------
# Corpus assembly, output and summary
# --------------------------------------------------------------------------


def generate_pairs(total: int, seed: int, lex: Lexicon) -> list[tuple[str, str]]:
    """Sample ``total`` pairs with distinct English sides, in sampling order.

    Also verifies that the translation is a function of the English string:
    a repeated English sentence must always come with the same Zedish.
    """
    sampler = Sampler(lex, random.Random(seed))
    seen: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    attempts = 0
    while len(pairs) < total:
        attempts += 1
        if attempts > 50 * total + 1000:
            raise RuntimeError(f"could only find {len(pairs)} distinct sentences")
        sent = sampler.sentence()
        en, zd = en_sentence(sent), zd_sentence(sent, lex)
        if max(len(en.split()), len(zd.split())) > MAX_WORDS:
            continue
        if en in seen:
            if seen[en] != zd:
                raise RuntimeError(f"ambiguous English sentence: {en!r}")
            continue
        seen[en] = zd
        pairs.append((en, zd))
    return pairs


def write_split(out: Path, name: str, pairs: Sequence[tuple[str, str]]) -> None:
    """Write line-aligned ``name.en`` / ``name.zd`` as UTF-8 with LF endings."""
    for side, lang in enumerate(("en", "zd")):
        text = "".join(pair[side] + "\n" for pair in pairs)
        (out / f"{name}.{lang}").write_bytes(text.encode("utf-8"))


def summarize(out: Path, splits: dict[str, list[tuple[str, str]]]) -> bool:
    """Print pairs, lengths, vocabulary and file sizes; False if a file is too big."""
    ok = True
    print(f"{'split':<6} {'pairs':>6} {'en mean':>8} {'en max':>7} {'zd mean':>8} {'zd max':>7}")
    for name, pairs in splits.items():
        en = [len(e.split()) for e, _ in pairs] or [0]
        zd = [len(z.split()) for _, z in pairs] or [0]
        print(
            f"{name:<6} {len(pairs):>6} {sum(en) / len(en):>8.2f} {max(en):>7}"
            f" {sum(zd) / len(zd):>8.2f} {max(zd):>7}"
        )
    for side, lang in enumerate(("en", "zd")):
        tokens = {w for pairs in splits.values() for p in pairs for w in p[side].split()}
        words = {w.rstrip(".?").lower() for w in tokens}
        print(
            f"{lang} vocabulary: {len(words)} words (lowercased, no punctuation), "
            f"{len(tokens)} whitespace types"
        )
    for name in splits:
        for lang in ("en", "zd"):
            path = out / f"{name}.{lang}"
            size = path.stat().st_size
            flag = "" if size < MAX_FILE_BYTES else "  <-- over 1 MB!"
            ok = ok and size < MAX_FILE_BYTES
            print(f"{path}: {size} bytes{flag}")
    return ok


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Generate the synthetic English->Zedish corpus shipped with mtkit."
    )
    parser.add_argument("--out", type=Path, default=Path("data/synth"), help="output directory")
    parser.add_argument("--seed", type=int, default=1234, help="sentence sampling seed")
    parser.add_argument("--train", type=int, default=12000, help="training pairs")
    parser.add_argument("--valid", type=int, default=500, help="validation pairs")
    parser.add_argument("--test", type=int, default=500, help="test pairs")
    args = parser.parse_args(argv)
    if args.train < 1 or args.valid < 0 or args.test < 0:
        parser.error("--train must be at least 1, --valid and --test at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Generate, write and summarise the corpus; non-zero exit if a file is too big."""
    args = parse_args(argv)
    lex = build_lexicon()
    pairs = generate_pairs(args.train + args.valid + args.test, args.seed, lex)
    cut1, cut2 = args.train, args.train + args.valid
    splits = {"train": pairs[:cut1], "valid": pairs[cut1:cut2], "test": pairs[cut2:]}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        write_split(args.out, name, split)
    return 0 if summarize(args.out, splits) else 1


if __name__ == "__main__":
    raise SystemExit(main())
