"""SciFig's wording: the small text helpers and each figure's caption, mentions and citing-paragraph lead."""

from __future__ import annotations

from typing import Any

import numpy as np

_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_TREND_VERB = {"increasing": "increases", "decreasing": "decreases", "rises then falls": "rises then falls"}


def _plural(noun: str, n: int = 2) -> str:
    if n == 1 or noun.endswith("species"):
        return noun
    return noun + "es" if noun.endswith("ss") else (noun[:-1] + "ies" if noun.endswith("ry") else noun + "s")


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _the(name: str) -> str:
    """'the sine wave', but "Newton's second law" (a possessive name takes no article)."""
    return name if "'" in name else f"the {name}"


def _var(label: str) -> str:
    """An axis label without its unit, lower-cased unless it is an acronym: 'Time (s)' -> 'time'."""
    name = label.split(" (")[0]
    return name if name[:2].isupper() else name.lower()


def _fmt(v: float, span: float) -> str:
    return f"{round(v, 2 if span <= 1 else (1 if span <= 10 else 0)):g}"


def describe(s: dict[str, Any], rng: np.random.Generator) -> tuple[str, list[str], str]:
    """Caption, mentions and the lead sentence of the citing paragraph, all read off the spec."""
    ref = f"{_pick(rng, ['Fig.', 'Figure'])} {int(rng.integers(1, 10))}"
    t = s["type"]
    if t in ("Graph Plot", "Scatterplot", "Bar Chart"):
        d, n = s["domain"], len(s["names"])
        y, x, ent = _var(d["y"]), _var(d["x"]), _plural(d["entity"], n)
        cap_y = y[0].upper() + y[1:]
    if t == "Graph Plot":
        parts = [f"{se['name']} ({se['color']}) {_TREND_VERB[se['trend']]}" for se in s["series"]]
        caption = f"{cap_y} versus {x} for {_NUMBERS[n]} {ent}: {_join(parts)}."
        a = s["series"][0]
        mentions = [f"As shown in {ref}, the {y} of {a['name']} {_TREND_VERB[a['trend']]} with {x}."]
        if n > 1:
            b = s["series"][1]
            lead = "In contrast" if b["trend"] != a["trend"] else "Likewise"
            mentions.append(f"{lead}, {b['name']} {_TREND_VERB[b['trend']]}.")
        return caption, mentions, f"We track how the {y} of each {d['entity']} changes with {x}."
    if t == "Scatterplot":
        corr = "no clear correlation" if s["correlation"] == "no clear" else f"a {s['correlation']} correlation"
        groups = _join([f"{g['name']} in {g['color']}" for g in s["groups"]])
        caption = f"Scatterplot of {y} against {x} for {_NUMBERS[n]} {ent} ({groups}); the points show {corr}."
        mentions = [f"{ref} plots {y} against {x} for {_join(s['names'])}.", f"The points show {corr} between them."]
        return caption, mentions, f"We measured {y} and {x} for each {d['entity']}."
    if t == "Bar Chart":
        span = d["y_range"][1] - d["y_range"][0]
        hi, lo = int(np.argmax(s["heights"])), int(np.argmin(s["heights"]))
        tall, short = s["names"][hi], s["names"][lo]
        vals = f" ({_fmt(s['heights'][hi], span)})", f" ({_fmt(s['heights'][lo], span)})"
        caption = (
            f"{cap_y} by {_var(d['x'])} for {_NUMBERS[n]} {ent}; {tall} has the tallest bar{vals[0]} and "
            f"{short} the shortest{vals[1]}."
        )
        mentions = [f"As {ref} shows, {tall} has the highest {y}, while {short} has the lowest."]
        return caption, mentions, f"We compare the {y} of {_NUMBERS[n]} {ent}."
    if t == "Node Diagram":
        n, m = len(s["nodes"]), len(s["edges"])
        deg = max(nd["degree"] for nd in s["nodes"])
        nouns = _plural(s["noun"], n)
        caption = (
            f"A {s['kind']} of {_NUMBERS[n]} {nouns} connected by {_NUMBERS[m]} arrows; {s['hub']} has the "
            f"most connections ({deg})."
        )
        mentions = [f"{ref} depicts the {s['kind']} with its {_NUMBERS[n]} {nouns}."]
        mentions.append(f"{s['hub']} is the most connected {s['noun']}, with {deg} links.")
        return caption, mentions, f"We describe the {s['kind']} as a directed graph."
    eqs = s["equations"]
    if len(eqs) == 1:
        name = _the(eqs[0]["name"])
        caption = f"{name[0].upper()}{name[1:]}: {eqs[0]['text']}."
    else:
        parts = [f"({k + 1}) {_the(e['name'])}, {e['text']}" for k, e in enumerate(eqs)]
        caption = f"{_NUMBERS[len(eqs)].capitalize()} numbered equations: {'; '.join(parts)}."
    k = int(rng.integers(len(eqs)))
    mentions = [f"We define {eqs[k]['lhs']} as {_the(eqs[k]['name'])} in Eq. ({k + 1}) of {ref}."]
    if len(eqs) > 1:
        mentions.append(f"{ref} lists {_NUMBERS[len(eqs)]} equations in total.")
    return caption, mentions, "We now state the equations used in our analysis."


def _pick(rng: np.random.Generator, seq: Any) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
