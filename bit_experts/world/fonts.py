"""The font files the offline world renders with: the TrueType fonts that ship inside matplotlib.

Upstream images use the twelve DejaVu text faces; the four STIX General faces (a Times-like design
that upstream never shows) are held out for the downstream task built near one expert domain.
"""

from __future__ import annotations

import functools
import os

import matplotlib
import numpy as np
from matplotlib import ft2font
from PIL import Image, ImageDraw, ImageFont

UPSTREAM_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
)
HELDOUT_FONTS = (
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)


def font_dir() -> str:
    """The folder of TrueType files inside the installed matplotlib."""
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


def font_path(name: str) -> str:
    """The full path of font file `name` (a basename such as "DejaVuSans.ttf")."""
    path = os.path.join(font_dir(), name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"font {name!r} not found in {font_dir()!r}; the offline world needs the fonts that "
            "ship with matplotlib"
        )
    return path


@functools.cache
def _codepoints(name: str) -> frozenset[int]:
    return frozenset(ft2font.FT2Font(font_path(name)).get_charmap())


def has_glyph(name: str, char: str) -> bool:
    """Whether font `name` maps `char` to a real glyph (not the .notdef box)."""
    return ord(char) in _codepoints(name)


@functools.cache
def _truetype(name: str, points: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(name), points)


def _fitted_mask(name: str, char: str, size: int) -> np.ndarray | None:
    # Drawn at twice the size and reduced with a box filter, which keeps thin strokes.
    points = 2 * size
    canvas = Image.new("L", (4 * points, 4 * points), 0)
    ImageDraw.Draw(canvas).text(
        (2 * points, 2 * points), char, font=_truetype(name, points), fill=255, anchor="mm"
    )
    box = canvas.getbbox()
    if box is None:
        return None
    ink = canvas.crop(box)
    scale = size / max(ink.size)
    width, height = (max(1, round(side * scale)) for side in ink.size)
    ink = ink.resize((width, height), Image.Resampling.BOX)
    out = Image.new("L", (size, size), 0)
    out.paste(ink, ((size - width) // 2, (size - height) // 2))
    mask = np.asarray(out, dtype=np.float32) / 255.0
    mask.setflags(write=False)
    return mask


@functools.cache
def glyph_mask(name: str, char: str, size: int) -> np.ndarray:
    """Coverage of `char` in font `name`, cropped to its ink and fitted into a size x size box.

    The glyph keeps its aspect ratio, its longer side fills the box and it is centred. Returns a
    read-only float32 [size, size] array in [0, 1]. Raises ValueError if the font lacks the
    character (FreeType would silently draw the .notdef box instead).
    """
    if not has_glyph(name, char):
        raise ValueError(f"font {name!r} has no glyph for {char!r} (U+{ord(char):04X})")
    mask = _fitted_mask(name, char, size)
    if mask is None:
        raise ValueError(f"font {name!r} draws {char!r} (U+{ord(char):04X}) with no ink")
    return mask


def notdef_mask(name: str, size: int) -> np.ndarray:
    """What font `name` draws for a character it lacks (its .notdef glyph, all zeros if that is
    blank), fitted like `glyph_mask`; for checking that no glyph drawn is the missing-glyph box."""
    probe = next(chr(c) for c in range(0xE000, 0xF900) if not has_glyph(name, chr(c)))
    mask = _fitted_mask(name, probe, size)
    return np.zeros((size, size), np.float32) if mask is None else mask
