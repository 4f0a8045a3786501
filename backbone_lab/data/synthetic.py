"""Deterministic synthetic TinyStories-like stories (offline stand-in for the real corpus).

Stories are 3–8 template sentences over a fixed vocabulary of about 400 words (names,
animals, objects, places, verbs, adjectives, feelings). They are meant for CPU smoke runs
and tests (PAPER_MAP §8: "everything must run end-to-end on synthetic stories"), not for
reproducing paper numbers. Same ``seed`` -> same list; 10k stories take well under 1 s.
`recipe_fingerprint` names the generator's inputs, so a cache of its output (`corpus.py`)
can never serve stories of an older generator.
"""

from __future__ import annotations

import hashlib
import json
import random

RECIPE_VERSION = 1
"""Bump when the generating *code* changes the stories (the word lists and templates below are
fingerprinted by content, so editing them needs no bump)."""

NAMES = (
    "Lily Tom Max Mia Ben Sue Tim Anna Sam Lucy Jack Emma Leo Zoe Finn Ella Jake Ruby Noah Amy "
    "Dan Kate Joe Nina Ted Rosa Bob Lena Gus Ivy Hugo Lola Otto Pia Rex Tess Milo Cleo Ivan Dora "
    "Sara Paul Molly Oscar Daisy Henry Grace Oliver Rose Luke"
).split()
ANIMALS = (
    "cat dog bird fish frog duck bunny bear lion tiger mouse horse cow pig sheep goat fox owl "
    "turtle snake puppy kitten monkey zebra whale shark bee ant butterfly squirrel deer wolf "
    "panda koala hen rooster parrot crab snail ladybug elephant giraffe"
).split()
OBJECTS = (
    "ball toy box hat kite car boat book cup bag key drum bell doll train truck shoe sock "
    "blanket pillow apple cake cookie flower tree rock stick leaf shell stone coin ring "
    "crayon pencil paper map lamp clock chair table basket bucket spoon bowl jar rope "
    "balloon candy sandwich banana carrot button feather umbrella jacket scarf wagon swing "
    "slide bike ladder bottle brush comb mirror needle puzzle robot rocket crown sword shovel "
    "pie soup bread cheese milk juice egg orange grape lemon honey star moon cloud flag "
    "tent fence gate door window bed sofa fork plate whistle marble teddy"
).split()
PLACES = (
    "park garden forest house kitchen school beach river lake farm zoo yard room shop "
    "market town village hill field pond cave castle street playground library bakery "
    "island mountain meadow barn bridge pool tower desert jungle station"
).split()
VERBS_PAST = (
    "ran jumped played laughed danced sang walked swam climbed hopped smiled looked "
    "waited slept rested cried shouted whispered skipped rolled"
).split()
VERBS_INF = (
    "play run jump sing dance swim read draw paint build climb explore share help "
    "cook bake count hide seek fly ride dig"
).split()
ADJECTIVES = (
    "big small little red blue green yellow shiny soft happy sad kind brave funny silly "
    "old new tall short fast slow bright dark warm cold pretty quiet loud tiny huge round "
    "fluffy sweet sleepy busy gentle curious clever shy strong wet dry clean dirty "
    "purple pink orange golden sparkly smooth bumpy hungry lucky magic friendly"
).split()
FEELINGS = "happy sad scared excited proud surprised angry calm glad worried tired curious".split()
TIMES = ("One day", "Once upon a time", "In the morning", "After lunch", "Later", "At night",
         "On a sunny day", "One rainy day", "The next day", "Soon")

# Templates: {n}, {f} = names; {a} = animal; {o}, {o2} = objects; {p} = place; {v} = past verb;
# {i} = infinitive verb; {j}, {j2} = adjectives; {e} = feeling; {t} = time phrase.
OPENINGS = (
    "{t}, there was a {j} {a} named {n}.",
    "{t}, a {j} girl named {n} went to the {p}.",
    "{t}, a little boy named {n} found a {j} {o}.",
    "{n} was a {j} {a} who lived near the {p}.",
    "{t}, {n} and {f} played in the {p}.",
)
MIDDLES = (
    "{n} liked to {i} in the {p}.",
    "{n} saw a {j} {a} near the {o}.",
    "The {a} {v} around the {j} {o}.",
    "{n} wanted to {i} with {f}.",
    "{f} said, \"Can we {i} with the {o}?\"",
    "\"Look at the {j} {o}!\" said {n}.",
    "{n} gave the {o} to {f}.",
    "They {v} all the way to the {p}.",
    "{n} felt {e} because the {o} was {j}.",
    "The {j} {a} had a {j2} {o}.",
    "{n} and the {a} {v} together.",
    "{f} was {e} and {v}.",
    "{n} put the {o} in the {o2}.",
    "It was a {j} day at the {p}.",
    "{n} asked {f} to {i}.",
    "Then {n} {v} and {v2}.",
    "The {o} was too {j} for {n}.",
    "{f} found a {o} under the {o2}.",
)
ENDINGS = (
    "{n} was very {e}.",
    "From that day on, {n} and {f} were best friends.",
    "They went home and {v}.",
    "{n} learned to always {i} with friends.",
    "The end.",
    "And they all lived happily ever after.",
)


def vocabulary() -> list[str]:
    """All content words the generator can emit (sorted, ~400 entries)."""
    words = set(NAMES + ANIMALS + OBJECTS + PLACES + VERBS_PAST + VERBS_INF + ADJECTIVES + FEELINGS)
    for tmpl in OPENINGS + MIDDLES + ENDINGS + TIMES:
        words.update(w.strip('.,!?"{}').lower() for w in tmpl.split() if "{" not in w)
    return sorted(w for w in words if w)


def _fill(tmpl: str, rng: random.Random, hero: str, friend: str, animal: str) -> str:
    return tmpl.format(
        n=hero, f=friend, a=animal,
        o=rng.choice(OBJECTS), o2=rng.choice(OBJECTS), p=rng.choice(PLACES),
        v=rng.choice(VERBS_PAST), v2=rng.choice(VERBS_PAST), i=rng.choice(VERBS_INF),
        j=rng.choice(ADJECTIVES), j2=rng.choice(ADJECTIVES), e=rng.choice(FEELINGS),
        t=rng.choice(TIMES),
    )


def generate_story(rng: random.Random) -> str:
    """One story of 3–8 sentences: an opening, 1–6 middle sentences and an ending."""
    hero, friend = rng.sample(NAMES, 2)
    animal = rng.choice(ANIMALS)
    n_middle = rng.randint(1, 6)
    parts = [_fill(rng.choice(OPENINGS), rng, hero, friend, animal)]
    parts += [_fill(rng.choice(MIDDLES), rng, hero, friend, animal) for _ in range(n_middle)]
    parts.append(_fill(rng.choice(ENDINGS), rng, hero, friend, animal))
    return " ".join(parts)


def generate_stories(n_stories: int, seed: int = 0) -> list[str]:
    """``n_stories`` synthetic stories; a pure function of ``(n_stories, seed)``.

    The first k stories of ``generate_stories(n, s)`` equal ``generate_stories(k, s)``.
    """
    if n_stories < 0:
        raise ValueError(f"n_stories must be >= 0, got {n_stories}")
    rng = random.Random(f"backbone_lab.synthetic:{seed}")
    return [generate_story(rng) for _ in range(n_stories)]


def recipe_fingerprint() -> str:
    """sha256 of everything the stories depend on besides (n_stories, seed): the recipe version,
    the word lists and the templates."""
    parts = {"version": RECIPE_VERSION, "names": NAMES, "animals": ANIMALS, "objects": OBJECTS, "places": PLACES,
             "verbs_past": VERBS_PAST, "verbs_inf": VERBS_INF, "adjectives": ADJECTIVES, "feelings": FEELINGS,
             "times": TIMES, "openings": OPENINGS, "middles": MIDDLES, "endings": ENDINGS}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()
