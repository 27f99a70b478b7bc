"""What the upstream world contains: scripts > groups > characters, and the is-a edges between them.

Each script is split into groups that look different (capitals vs small letters, arrows vs box
drawing), and two cross-cutting nodes join the groups of every cased script ("capital_letters",
"small_letters"), so a capital belongs to both its script and to "capital_letters": the hierarchy
is a DAG, not a tree. Characters that look the same as an earlier one once fitted into a box
(Latin "A" and Greek "Alpha", "p" and "rho") would be unlearnable duplicate labels, so only the
first of each look-alike set is kept.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from bit_experts.world import fonts

ROOT = "glyph"


def _span(first: int, last: int, skip: tuple[int, ...] = ()) -> str:
    return "".join(chr(c) for c in range(first, last + 1) if c not in skip)


# Script -> ((group, characters), ...). The order fixes label ids and which look-alike survives.
SCRIPTS: dict[str, tuple[tuple[str, str], ...]] = {
    "latin": (("latin_upper", _span(0x41, 0x5A)), ("latin_lower", _span(0x61, 0x7A))),
    "numerals": (
        ("digits", "0123456789"),
        ("fractions", "¼½¾⅓⅔⅕⅖⅗⅘⅙⅚⅛⅜⅝⅞"),
        ("circled_digits", "①②③④⑤⑥⑦⑧⑨⑩"),
    ),
    "greek": (
        ("greek_upper", _span(0x391, 0x3A9, skip=(0x3A2,))),  # U+03A2 is unassigned.
        ("greek_lower", _span(0x3B1, 0x3C9)),
    ),
    "cyrillic": (("cyrillic_upper", _span(0x410, 0x42F)), ("cyrillic_lower", _span(0x430, 0x44F))),
    "armenian": (("armenian_upper", _span(0x531, 0x556)), ("armenian_lower", _span(0x561, 0x586))),
    "georgian": (
        ("georgian_upper", _span(0x10A0, 0x10C5)),  # Asomtavruli capitals.
        ("georgian_lower", _span(0x10D0, 0x10F0)),  # Mkhedruli.
    ),
    "hebrew": (("hebrew_letters", "אבגדהוזחטיכלמנסעפצקרשת"), ("hebrew_final_forms", "ךםןףץ")),
    "symbols": (
        ("arrows", "←↑→↓↔↕↖↗↘↙↩↪↰↱↺↻⇄⇅⇆⇇⇈⇉⇊⇐⇑⇒⇓⇔⇕⇦⇧⇨⇩"),
        ("math_operators", "∀∂∃∅∇∈∉∋∏∑∓√∞∝∠∧∨∩∪∫∮∴∵≈≠≡≤≥≪≫⊂⊃⊆⊇⊕⊖⊗⊙⊢⊥⋈"),
        ("box_drawing", "┌┐└┘├┤┬┴┼╔╗╚╝╠╣╦╩╬┏┓┗┛┣┫┳┻╋╭╮╯╰╱╲╳"),
        ("shapes", "■□▲△▶▷▼▽◀◁◆◇○●◎◐◑◒◓◧◨◩◪★☆♠♡♢♣♤♥♦♧▣▤▥▦▧▨▩"),
    ),
}
# Cross-cutting parents: node -> the groups it spans (kept only where >= 2 of them are present).
CROSS_CUTTING: dict[str, tuple[str, ...]] = {
    "capital_letters": tuple(
        f"{s}_upper" for s in ("latin", "greek", "cyrillic", "armenian", "georgian")
    ),
    "small_letters": tuple(
        f"{s}_lower" for s in ("latin", "greek", "cyrillic", "armenian", "georgian")
    ),
}

# Look-alike test: masks fitted into this box in each reference font; soft IoU above the threshold
# in any of them means the same label. 0.9 catches true homoglyphs (IoU 0.92-1.0: "p"/"rho",
# Armenian "ց"/"g") but keeps merely similar letters ("F"/"E" 0.84).
_LOOKALIKE_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
_LOOKALIKE_BOX = 24
_LOOKALIKE_IOU = 0.9


@dataclasses.dataclass(frozen=True)
class Glyph:
    """One character class of the upstream world.

    Attributes:
      name: its hierarchy node (the lower-cased Unicode name, e.g. "greek_small_letter_alpha").
      char: the character itself.
      script: the script node it belongs to (e.g. "greek").
      group: the group node that is its parent (e.g. "greek_lower").
      fonts: the upstream fonts that contain it, in `fonts.UPSTREAM_FONTS` order.
    """

    name: str
    char: str
    script: str
    group: str
    fonts: tuple[str, ...]


def node_name(char: str) -> str:
    """The hierarchy node name of a character: its Unicode name, lower case, '_' separated."""
    return re.sub(r"[^a-z0-9]+", "_", unicodedata.name(char).lower()).strip("_")


def _soft_iou(mask: np.ndarray, others: np.ndarray) -> np.ndarray:
    return np.minimum(mask, others).sum(axis=(1, 2)) / np.maximum(mask, others).sum(axis=(1, 2))


@functools.cache
def _all_glyphs() -> tuple[Glyph, ...]:
    kept: list[Glyph] = []
    # Per reference font, the masks of the kept glyphs; zeros where the font lacks one (IoU 0).
    masks = {f: [] for f in _LOOKALIKE_FONTS}
    for script, groups in SCRIPTS.items():
        for group, chars in groups:
            for char in chars:
                in_fonts = tuple(f for f in fonts.UPSTREAM_FONTS if fonts.has_glyph(f, char))
                if not in_fonts:
                    continue
                refs = {
                    f: fonts.glyph_mask(f, char, _LOOKALIKE_BOX)
                    for f in _LOOKALIKE_FONTS
                    if fonts.has_glyph(f, char)
                }
                if any(
                    masks[f] and _soft_iou(m, np.stack(masks[f])).max() > _LOOKALIKE_IOU
                    for f, m in refs.items()
                ):
                    continue
                kept.append(Glyph(node_name(char), char, script, group, in_fonts))
                blank = np.zeros((_LOOKALIKE_BOX, _LOOKALIKE_BOX), np.float32)
                for f in _LOOKALIKE_FONTS:
                    masks[f].append(refs.get(f, blank))
    return tuple(kept)


def glyphs(scripts: Sequence[str] | None = None) -> tuple[Glyph, ...]:
    """The deduplicated character classes, in label-id order, optionally only of some scripts.

    Look-alikes are resolved over the full inventory, so a script's classes do not depend on which
    other scripts are selected. Raises ValueError for an unknown script name.
    """
    if scripts is None:
        return _all_glyphs()
    if isinstance(scripts, str):
        raise ValueError(f"scripts must be a sequence of script names, got the string {scripts!r}")
    unknown = sorted(set(scripts) - set(SCRIPTS))
    if unknown or not scripts:
        raise ValueError(
            f"scripts={list(scripts)!r}: expected a non-empty subset of {list(SCRIPTS)}"
            + (f"; unknown: {unknown}" if unknown else "")
        )
    wanted = set(scripts)
    return tuple(g for g in _all_glyphs() if g.script in wanted)


def hierarchy_edges(classes: Sequence[Glyph]) -> list[tuple[str, str]]:
    """The (parent, child) is-a edges over `classes`: root > script > group > character, plus the
    cross-cutting parents of groups. Deterministic order; every edge appears once."""
    edges: list[tuple[str, str]] = []
    seen_scripts: list[str] = []
    seen_groups: list[str] = []
    for g in classes:
        if g.script not in seen_scripts:
            seen_scripts.append(g.script)
            edges.append((ROOT, g.script))
        if g.group not in seen_groups:
            seen_groups.append(g.group)
            edges.append((g.script, g.group))
        edges.append((g.group, g.name))
    for parent, spanned in CROSS_CUTTING.items():
        present = [group for group in spanned if group in seen_groups]
        if len(present) >= 2:
            edges.append((ROOT, parent))
            edges.extend((parent, group) for group in present)
    return edges
