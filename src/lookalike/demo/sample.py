"""The built-in sample: a labelled collection of procedurally drawn anime-style characters.

Every character has a fixed identity (hair colour and shape, eye colour, skin, accessory);
every image of it varies in background, position, size, tilt, outfit and expression. The
background themes are drawn independently of the character and are loud on purpose: a
whole-image embedding is pulled towards "same background", a head-crop embedding towards
"same character", which is the trade-off the article's presets explore.

The faces are drawn so that the real `animeface` detector finds them (flat skin, large dark
eyes with highlights, a fringe above them). Everything is deterministic: the same seed
writes byte-identical files.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lookalike.errors import LookalikeError

RGB = tuple[int, int, int]
Point = tuple[float, float]

# Drawn at twice the output size and reduced, which anti-aliases the flat shapes.
SUPERSAMPLE = 2

HAIR_COLOURS: dict[str, RGB] = {
    "pink": (244, 150, 190),
    "blonde": (248, 212, 112),
    "silver": (200, 206, 224),
    "black": (48, 42, 64),
    "brown": (134, 82, 52),
    "blue": (72, 118, 218),
    "red": (204, 52, 62),
    "purple": (150, 98, 200),
}
EYE_COLOURS: dict[str, RGB] = {
    "blue": (40, 100, 220),
    "green": (30, 150, 80),
    "red": (200, 36, 48),
    "amber": (214, 140, 20),
    "violet": (124, 56, 186),
    "brown": (118, 66, 36),
}
SKIN_TONES: dict[str, RGB] = {
    "fair": (255, 231, 216),
    "light": (252, 216, 188),
    "tan": (226, 176, 134),
}
OUTFIT_COLOURS: dict[str, RGB] = {
    "navy": (36, 48, 110),
    "white": (236, 236, 240),
    "red": (196, 40, 52),
    "green": (40, 130, 72),
    "yellow": (238, 196, 40),
    "grey": (120, 120, 130),
}
ACCENT_COLOURS: tuple[RGB, ...] = (
    (230, 40, 70),
    (40, 90, 200),
    (250, 250, 250),
    (250, 190, 30),
    (30, 30, 40),
    (60, 180, 120),
)
HAIR_LENGTHS = ("short", "long", "twintails", "ponytail", "buns")
FRINGES = ("blunt", "swept", "spiky", "parted")
ACCESSORIES = ("none", "ribbon", "glasses", "hat", "hairclip", "cat_ears")
OUTFIT_STYLES = ("sailor", "blazer", "hoodie")
EXPRESSIONS = ("smile", "open", "neutral")
BACKGROUNDS = ("sky", "sunset", "forest", "night", "stripes", "dots", "classroom", "sakura")

NAMES = (
    "akane", "botan", "chiyo", "daisy", "emi", "fumi", "hana", "iori",
    "junko", "kaede", "luna", "mio", "nagi", "osaka", "rin", "sakura",
    "tomo", "umi", "yuki", "zora", "aoi", "chika", "haru", "kumi",
)  # fmt: skip

LINE: RGB = (40, 30, 40)  # the ink of outlines, lashes and the mouth


@dataclass(frozen=True)
class CharacterSpec:
    """The fixed identity of one character: what stays the same in all its images."""

    name: str
    hair: str  # a key of HAIR_COLOURS
    hair_length: str  # one of HAIR_LENGTHS
    fringe: str  # one of FRINGES
    ahoge: bool  # the single upright strand on top
    eyes: str  # a key of EYE_COLOURS
    skin: str  # a key of SKIN_TONES
    accessory: str  # one of ACCESSORIES
    accent: RGB  # colour of the accessory


@dataclass(frozen=True)
class Scene:
    """What varies from one image of a character to the next."""

    background: str  # one of BACKGROUNDS
    outfit: str  # a key of OUTFIT_COLOURS
    outfit_style: str  # one of OUTFIT_STYLES
    expression: str  # one of EXPRESSIONS
    cx: float  # head centre, in drawing pixels
    cy: float
    r: float  # head half-width, in drawing pixels; every other length derives from it
    angle: float  # tilt of the character in degrees, counter-clockwise
    blush: bool


MAX_CHARACTERS = 500  # far below the number of distinct identities, so the cast never stalls


def _deck(rng: random.Random, options: Sequence[str]) -> Iterator[str]:
    """Endless shuffled rounds of the options: a small cast still shows every one of them."""
    while True:
        round_ = list(options)
        rng.shuffle(round_)
        yield from round_


def character_specs(n_characters: int = 12) -> list[CharacterSpec]:
    """The cast, the same for every seed: hair colours cycle, the other traits are dealt.

    With more characters than hair colours, some characters share a hair colour and differ
    in hair shape, eyes and accessory: look-alikes that are not the same character.
    """
    if not 1 <= n_characters <= MAX_CHARACTERS:
        raise LookalikeError(
            f"the sample takes 1 to {MAX_CHARACTERS} characters, got {n_characters}"
        )
    rng = random.Random("lookalike-cast")
    hairs = list(HAIR_COLOURS)
    lengths, fringes = _deck(rng, HAIR_LENGTHS), _deck(rng, FRINGES)
    eyes, skins, accessories = (
        _deck(rng, list(EYE_COLOURS)),
        _deck(rng, list(SKIN_TONES)),
        _deck(rng, ACCESSORIES),
    )
    specs: list[CharacterSpec] = []
    seen: set[tuple[str, ...]] = set()
    while len(specs) < n_characters:
        k = len(specs)
        spec = CharacterSpec(
            name=NAMES[k % len(NAMES)] + (str(k // len(NAMES) + 1) if k >= len(NAMES) else ""),
            hair=hairs[k % len(hairs)],
            hair_length=next(lengths),
            fringe=next(fringes),
            ahoge=rng.random() < 0.4,
            eyes=next(eyes),
            skin=next(skins),
            accessory=next(accessories),
            accent=rng.choice(ACCENT_COLOURS),
        )
        identity = (spec.hair, spec.hair_length, spec.fringe, spec.eyes, spec.accessory)
        if identity not in seen:
            seen.add(identity)
            specs.append(spec)
    return specs


def sample_scene(rng: random.Random, canvas: int) -> Scene:
    """Draw one image's variation; `canvas` is the drawing size (output size x SUPERSAMPLE)."""
    return Scene(
        background=rng.choice(BACKGROUNDS),
        outfit=rng.choice(list(OUTFIT_COLOURS)),
        outfit_style=rng.choice(OUTFIT_STYLES),
        expression=rng.choice(EXPRESSIONS),
        cx=canvas * rng.uniform(0.36, 0.64),
        cy=canvas * rng.uniform(0.34, 0.48),
        r=canvas * rng.uniform(0.14, 0.22),
        angle=rng.uniform(-8.0, 8.0),
        blush=rng.random() < 0.5,
    )


# --- colour and geometry helpers -------------------------------------------------------------


def _rgb(values: Iterable[float]) -> RGB:
    r, g, b = (min(255, max(0, round(v))) for v in values)
    return (r, g, b)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return _rgb(x + (y - x) * t for x, y in zip(a, b, strict=True))


def shade(rgb: RGB, factor: float) -> RGB:
    """Darker (factor < 1, towards black) or lighter (factor > 1, towards white)."""
    return mix(rgb, (0, 0, 0), 1 - factor) if factor <= 1 else mix(rgb, (255, 255, 255), factor - 1)


def jitter(rgb: RGB, rng: random.Random, amount: int = 16) -> RGB:
    return _rgb(c + rng.randint(-amount, amount) for c in rgb)


def pt(s: Scene, x: float, y: float) -> Point:
    """A point given in head units (head half-width = 1, origin at the head centre)."""
    return (s.cx + x * s.r, s.cy + y * s.r)


def pts(s: Scene, points: Sequence[Point], mirror: bool = False) -> list[Point]:
    sign = -1.0 if mirror else 1.0
    return [pt(s, sign * x, y) for x, y in points]


def box(s: Scene, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    return (*pt(s, x0, y0), *pt(s, x1, y1))


def width(s: Scene, w: float) -> int:
    return max(1, round(w * s.r))


def gradient(canvas: int, top: RGB, bottom: RGB) -> Image.Image:
    t = np.linspace(0.0, 1.0, canvas, dtype=np.float32)[:, None, None]
    rows = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    return Image.fromarray(np.repeat(rows.round().astype(np.uint8), canvas, axis=1), "RGB")


# --- backgrounds: one function per theme, all loud, none tied to a character ------------------


def _sky(canvas: int, rng: random.Random) -> Image.Image:
    im = gradient(canvas, jitter((120, 190, 250), rng), jitter((40, 110, 230), rng))
    d = ImageDraw.Draw(im)
    for _ in range(rng.randint(3, 5)):
        x, y = rng.uniform(0, canvas), rng.uniform(0, canvas * 0.8)
        w = canvas * rng.uniform(0.08, 0.14)
        for dx in (-w, 0.0, w):
            d.ellipse((x + dx - w, y - w * 0.6, x + dx + w, y + w * 0.6), fill=(250, 252, 255))
    return im


def _sunset(canvas: int, rng: random.Random) -> Image.Image:
    im = gradient(canvas, jitter((255, 150, 60), rng), jitter((150, 50, 140), rng))
    d = ImageDraw.Draw(im)
    x, y, r = canvas * rng.uniform(0.15, 0.85), canvas * rng.uniform(0.55, 0.7), canvas * 0.12
    d.ellipse((x - r, y - r, x + r, y + r), fill=(255, 226, 120))
    hills = [(0.0, canvas * rng.uniform(0.7, 0.8))]
    hills += [(canvas * i / 6, canvas * rng.uniform(0.68, 0.82)) for i in range(1, 7)]
    d.polygon([*hills, (canvas, canvas), (0, canvas)], fill=(70, 30, 70))
    return im


def _forest(canvas: int, rng: random.Random) -> Image.Image:
    im = gradient(canvas, jitter((170, 220, 150), rng), jitter((60, 130, 70), rng))
    d = ImageDraw.Draw(im)
    for _ in range(rng.randint(6, 10)):
        x, h = rng.uniform(0, canvas), canvas * rng.uniform(0.3, 0.55)
        base = canvas * rng.uniform(0.75, 1.0)
        d.rectangle((x - h * 0.05, base - h * 0.2, x + h * 0.05, base), fill=(100, 60, 30))
        d.polygon(
            [(x, base - h), (x - h * 0.3, base - h * 0.15), (x + h * 0.3, base - h * 0.15)],
            fill=jitter((30, 100, 50), rng, 20),
        )
    return im


def _night(canvas: int, rng: random.Random) -> Image.Image:
    im = gradient(canvas, jitter((12, 16, 56), rng, 8), jitter((50, 36, 100), rng))
    d = ImageDraw.Draw(im)
    for _ in range(70):
        x, y, r = rng.uniform(0, canvas), rng.uniform(0, canvas), canvas * rng.uniform(0.002, 0.006)
        d.ellipse((x - r, y - r, x + r, y + r), fill=(255, 250, 200))
    x, y, r = canvas * rng.uniform(0.1, 0.9), canvas * rng.uniform(0.08, 0.3), canvas * 0.08
    d.ellipse((x - r, y - r, x + r, y + r), fill=(250, 240, 190))
    return im


def _stripes(canvas: int, rng: random.Random) -> Image.Image:
    a, b = rng.choice(
        [
            ((250, 90, 90), (255, 230, 120)),
            ((70, 200, 200), (40, 60, 160)),
            ((250, 140, 40), (250, 250, 250)),
            ((140, 230, 90), (30, 120, 80)),
        ]
    )
    im = Image.new("RGB", (canvas, canvas), a)
    d = ImageDraw.Draw(im)
    step, offset = canvas * rng.uniform(0.08, 0.14), rng.uniform(0, canvas * 0.2)
    for i in range(-12, 24):
        x = i * step * 2 + offset
        d.polygon(
            [(x, 0), (x + step, 0), (x + step - canvas, canvas), (x - canvas, canvas)], fill=b
        )
    return im


def _dots(canvas: int, rng: random.Random) -> Image.Image:
    base = rng.choice([(250, 170, 200), (160, 120, 230), (250, 210, 80)])
    im = Image.new("RGB", (canvas, canvas), jitter(base, rng))
    d = ImageDraw.Draw(im)
    step, r = canvas * rng.uniform(0.1, 0.14), canvas * 0.025
    ox, oy = rng.uniform(0, step), rng.uniform(0, step)
    for row in range(-1, round(canvas / step) + 2):
        for col in range(-1, round(canvas / step) + 2):
            x, y = ox + col * step + (step / 2 if row % 2 else 0), oy + row * step
            d.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 255))
    return im


def _classroom(canvas: int, rng: random.Random) -> Image.Image:
    im = Image.new("RGB", (canvas, canvas), jitter((236, 222, 190), rng))
    d = ImageDraw.Draw(im)
    x0, y0 = canvas * rng.uniform(-0.2, 0.3), canvas * rng.uniform(0.1, 0.2)
    d.rectangle((x0, y0, x0 + canvas * 0.9, y0 + canvas * 0.45), fill=(140, 100, 60))
    d.rectangle(
        (x0 + canvas * 0.02, y0 + canvas * 0.02, x0 + canvas * 0.88, y0 + canvas * 0.43),
        fill=(40, 90, 60),
    )
    d.rectangle((0, canvas * 0.8, canvas, canvas), fill=(160, 110, 70))
    return im


def _sakura(canvas: int, rng: random.Random) -> Image.Image:
    im = gradient(canvas, jitter((255, 226, 238), rng), jitter((248, 160, 196), rng))
    d = ImageDraw.Draw(im)
    y = canvas * rng.uniform(0.05, 0.3)
    d.line(
        [(0, y), (canvas * 0.5, y + canvas * 0.1), (canvas, y - canvas * 0.05)],
        fill=(90, 50, 40),
        width=max(1, canvas // 40),
    )
    for _ in range(40):
        x, y, r = rng.uniform(0, canvas), rng.uniform(0, canvas), canvas * rng.uniform(0.01, 0.02)
        d.ellipse((x - r, y - r * 0.6, x + r, y + r * 0.6), fill=(255, 120, 170))
    return im


_BACKGROUND_PAINTERS = {
    "sky": _sky,
    "sunset": _sunset,
    "forest": _forest,
    "night": _night,
    "stripes": _stripes,
    "dots": _dots,
    "classroom": _classroom,
    "sakura": _sakura,
}


def draw_background(theme: str, canvas: int, rng: random.Random) -> Image.Image:
    return _BACKGROUND_PAINTERS[theme](canvas, rng)


# --- the character, back to front -------------------------------------------------------------


def draw_hair_back(d: ImageDraw.ImageDraw, spec: CharacterSpec, s: Scene) -> None:
    """The hair behind the head and body: its length is most of a character's silhouette."""
    hair, edge, w = HAIR_COLOURS[spec.hair], shade(HAIR_COLOURS[spec.hair], 0.7), width(s, 0.03)
    if spec.hair_length == "long":
        d.rounded_rectangle(
            box(s, -1.3, -0.6, 1.3, 3.8), radius=s.r, fill=hair, outline=edge, width=w
        )
    elif spec.hair_length == "twintails":
        for sign in (-1, 1):
            x0, x1 = sorted((sign * 1.0, sign * 2.0))
            d.ellipse(box(s, x0, -0.6, x1, 2.9), fill=hair, outline=edge, width=w)
    elif spec.hair_length == "ponytail":
        d.ellipse(box(s, 0.6, -1.0, 1.8, 2.2), fill=hair, outline=edge, width=w)
    elif spec.hair_length == "buns":
        for sign in (-1, 1):
            x0, x1 = sorted((sign * 0.4, sign * 1.15))
            d.ellipse(box(s, x0, -1.6, x1, -0.85), fill=hair, outline=edge, width=w)
    d.ellipse(box(s, -1.22, -1.38, 1.22, 0.9), fill=hair, outline=edge, width=w)
    if spec.hair_length == "short":
        d.rounded_rectangle(box(s, -1.22, -0.4, 1.22, 1.0), radius=s.r * 0.3, fill=hair)


def draw_body(d: ImageDraw.ImageDraw, spec: CharacterSpec, s: Scene) -> None:
    """Neck, shoulders and an outfit whose colour and cut change from image to image."""
    skin, cloth = SKIN_TONES[spec.skin], OUTFIT_COLOURS[s.outfit]
    w = width(s, 0.03)
    d.rectangle(box(s, -0.28, 0.5, 0.28, 1.5), fill=shade(skin, 0.88))
    torso = [
        (-0.4, 1.35),
        (0.4, 1.35),
        (1.5, 1.75),
        (1.95, 2.3),
        (2.2, 4.5),
        (-2.2, 4.5),
        (-1.95, 2.3),
        (-1.5, 1.75),
    ]
    d.polygon(pts(s, torso), fill=cloth, outline=shade(cloth, 0.6), width=w)
    trim = (236, 236, 240) if s.outfit != "white" else (36, 48, 110)
    if s.outfit_style == "sailor":
        collar = [(-0.4, 1.35), (0.4, 1.35), (1.4, 1.8), (0.0, 2.9), (-1.4, 1.8)]
        d.polygon(pts(s, collar), fill=trim, outline=shade(trim, 0.6), width=w)
        d.polygon(pts(s, [(-0.3, 1.4), (0.3, 1.4), (0.0, 2.6)]), fill=cloth)
        d.polygon(pts(s, [(0.0, 2.5), (-0.35, 3.1), (0.35, 3.1)]), fill=spec.accent)
    elif s.outfit_style == "blazer":
        d.polygon(pts(s, [(-0.4, 1.35), (0.4, 1.35), (0.0, 2.7)]), fill=(250, 250, 250))
        d.polygon(
            pts(s, [(-0.1, 1.45), (0.1, 1.45), (0.14, 2.3), (0.0, 2.5), (-0.14, 2.3)]),
            fill=spec.accent,
        )
        for sign in (False, True):
            lapel = [(0.4, 1.35), (0.75, 1.55), (0.1, 2.8)]
            d.line(pts(s, lapel, mirror=sign), fill=shade(cloth, 0.6), width=w)
    else:  # hoodie: a hood bunched around the neck, and its strings
        d.rounded_rectangle(
            box(s, -0.9, 1.2, 0.9, 1.75),
            radius=s.r * 0.25,
            fill=shade(cloth, 0.85),
            outline=shade(cloth, 0.6),
            width=w,
        )
        for x in (-0.25, 0.25):
            d.line([pt(s, x, 1.6), pt(s, x, 2.4)], fill=trim, width=w * 2)


def face_outline(s: Scene, grow: float = 0.0) -> tuple[tuple[float, ...], list[Point]]:
    """The face as an ellipse (cranium and cheeks) plus a polygon (the pointed chin)."""
    g = 1.0 + grow
    ellipse = box(s, -1.0 * g, -1.05 * g, 1.0 * g, 0.8 * g)
    chin = [(-0.96, 0.2), (-0.55, 0.82), (0.0, 1.12), (0.55, 0.82), (0.96, 0.2)]
    return ellipse, pts(s, [(x * g, y * g) for x, y in chin])


def draw_face(d: ImageDraw.ImageDraw, spec: CharacterSpec, s: Scene) -> None:
    """Flat skin with an ink outline, a hint of a nose, a mouth and maybe a blush."""
    skin = SKIN_TONES[spec.skin]
    for grow, colour in ((0.03, shade(skin, 0.6)), (0.0, skin)):  # outline first, then skin
        ellipse, chin = face_outline(s, grow)
        d.ellipse(ellipse, fill=colour)
        d.polygon(chin, fill=colour)
    if s.blush:
        for sign in (-1, 1):
            d.ellipse(
                box(s, sign * 0.55 - 0.15, 0.45, sign * 0.55 + 0.15, 0.56),
                fill=mix(skin, (250, 110, 130), 0.45),
            )
    d.line([pt(s, 0.0, 0.5), pt(s, -0.03, 0.55)], fill=shade(skin, 0.6), width=width(s, 0.025))
    w = width(s, 0.03)
    if s.expression == "smile":
        d.arc(box(s, -0.16, 0.55, 0.16, 0.78), 20, 160, fill=LINE, width=w)
    elif s.expression == "open":
        d.chord(box(s, -0.13, 0.64, 0.13, 0.86), 0, 180, fill=(150, 40, 50), outline=LINE, width=w)
    else:
        d.line([pt(s, -0.08, 0.74), pt(s, 0.08, 0.74)], fill=LINE, width=w)


def draw_eyes(d: ImageDraw.ImageDraw, spec: CharacterSpec, s: Scene) -> None:
    """Big, tall eyes with a dark lash line and bright highlights: what detectors key on."""
    iris = EYE_COLOURS[spec.eyes]
    brow = shade(HAIR_COLOURS[spec.hair], 0.55)
    for sign in (-1, 1):
        x, y = sign * 0.42, 0.18
        d.ellipse(box(s, x - 0.23, y - 0.3, x + 0.23, y + 0.3), fill=(255, 255, 255))
        d.ellipse(box(s, x - 0.19, y - 0.26, x + 0.19, y + 0.3), fill=iris)
        d.pieslice(box(s, x - 0.19, y - 0.26, x + 0.19, y + 0.3), 180, 360, fill=shade(iris, 0.55))
        d.ellipse(box(s, x - 0.09, y - 0.08, x + 0.09, y + 0.16), fill=(20, 14, 24))
        d.ellipse(box(s, x - 0.14, y - 0.18, x - 0.02, y - 0.05), fill=(255, 255, 255))
        d.ellipse(box(s, x + 0.04, y + 0.1, x + 0.1, y + 0.17), fill=(255, 255, 255))
        d.arc(
            box(s, x - 0.27, y - 0.33, x + 0.27, y + 0.33),
            200,
            340,
            fill=LINE,
            width=width(s, 0.08),
        )
        outer = sign * 0.27
        d.line(
            pts(s, [(x + outer * 0.9, y - 0.15), (x + outer * 1.1, y - 0.05)]),
            fill=LINE,
            width=width(s, 0.05),
        )
        d.arc(box(s, x - 0.2, y - 0.3, x + 0.2, y + 0.32), 60, 120, fill=LINE, width=width(s, 0.03))
        d.arc(
            box(s, x - 0.2, y - 0.5, x + 0.2, y - 0.3), 200, 340, fill=brow, width=width(s, 0.035)
        )


def _fringe_edge(fringe: str) -> list[Point]:
    """The lower edge of the fringe, right to left, in head units; the eyes start at y = -0.12."""
    xs = np.linspace(0.86, -0.86, 9)
    if fringe == "blunt":
        ys = [-0.3, -0.22, -0.32, -0.22, -0.32, -0.22, -0.32, -0.22, -0.3]
    elif fringe == "spiky":
        ys = [-0.15, -0.6, -0.12, -0.65, -0.1, -0.65, -0.12, -0.6, -0.15]
    elif fringe == "swept":
        ys = [-0.2, -0.75, -0.35, -0.8, -0.4, -0.7, -0.3, -0.45, -0.15]
    else:  # parted: two curtains that leave a triangle of forehead free in the middle
        ys = [-0.15, -0.35, -0.25, -0.6, -0.95, -0.6, -0.25, -0.35, -0.15]
    return [(float(x), y) for x, y in zip(xs, ys, strict=True)]


def draw_fringe(d: ImageDraw.ImageDraw, spec: CharacterSpec, s: Scene) -> None:
    """The top of the hair with its side locks and fringe, drawn over the face."""
    hair = HAIR_COLOURS[spec.hair]
    # The crown, left to right; then the side locks and the fringe edge, right to left.
    crown = [(1.12 * math.cos(a), -0.2 - 1.15 * math.sin(a)) for a in np.linspace(math.pi, 0, 24)]
    locks_right = [(0.95, 0.85), (0.84, -0.1)]
    locks_left = [(-0.84, -0.1), (-0.95, 0.85)]
    outline = [
        (-1.12, 0.2),
        *crown,
        (1.12, 0.2),
        *locks_right,
        *_fringe_edge(spec.fringe),
        *locks_left,
    ]
    d.polygon(pts(s, outline), fill=hair, outline=shade(hair, 0.7), width=width(s, 0.03))
    d.arc(box(s, -0.8, -1.05, 0.8, -0.45), 200, 340, fill=shade(hair, 1.35), width=width(s, 0.07))
    if spec.ahoge:
        strand = [(0.0, -1.3), (0.15, -1.75), (0.45, -1.8), (0.25, -1.65), (0.12, -1.3)]
        d.polygon(pts(s, strand), fill=hair, outline=shade(hair, 0.7), width=width(s, 0.02))


def draw_accessory(d: ImageDraw.ImageDraw, spec: CharacterSpec, s: Scene) -> None:
    a, edge, w = spec.accent, shade(spec.accent, 0.6), width(s, 0.03)
    if spec.accessory == "ribbon":  # a bow above one temple: two wings and a knot
        for tip in (0.4, 1.1):
            d.polygon(
                pts(s, [(0.75, -0.95), (tip, -1.17), (tip, -0.73)]), fill=a, outline=edge, width=w
            )
        d.ellipse(box(s, 0.67, -1.03, 0.83, -0.87), fill=a, outline=edge, width=w)
    elif spec.accessory == "glasses":
        for sign in (-1, 1):
            d.rounded_rectangle(
                box(s, sign * 0.42 - 0.3, -0.1, sign * 0.42 + 0.3, 0.45),
                radius=s.r * 0.1,
                outline=a,
                width=w,
            )
        d.line([pt(s, -0.12, 0.05), pt(s, 0.12, 0.05)], fill=a, width=w)
    elif spec.accessory == "hat":
        d.ellipse(box(s, -1.15, -1.75, 1.0, -0.95), fill=a, outline=edge, width=w)
        d.ellipse(box(s, -0.12, -1.9, 0.08, -1.7), fill=a, outline=edge, width=w)
    elif spec.accessory == "hairclip":
        for dx in (0.0, 0.14):
            d.line([pt(s, -0.75 + dx, -0.75), pt(s, -0.55 + dx, -0.45)], fill=a, width=w * 2)
    elif spec.accessory == "cat_ears":
        hair = HAIR_COLOURS[spec.hair]
        for mirror in (False, True):
            d.polygon(
                pts(s, [(0.35, -1.2), (0.85, -1.85), (1.0, -0.85)], mirror),
                fill=hair,
                outline=shade(hair, 0.7),
                width=w,
            )
            d.polygon(pts(s, [(0.5, -1.15), (0.84, -1.6), (0.92, -0.95)], mirror), fill=a)


def draw_character(spec: CharacterSpec, scene: Scene, canvas: int) -> Image.Image:
    """The character alone on a transparent layer, tilted about the head centre."""
    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    for part in (draw_hair_back, draw_body, draw_face, draw_eyes, draw_fringe, draw_accessory):
        part(d, spec, scene)
    # Nearest is ten times faster than bicubic here, and the reduction after it anti-aliases.
    return layer.rotate(scene.angle, resample=Image.NEAREST, center=(scene.cx, scene.cy))


def draw_image(spec: CharacterSpec, scene: Scene, rng: random.Random, size: int) -> Image.Image:
    canvas = size * SUPERSAMPLE
    image = draw_background(scene.background, canvas, rng)
    character = draw_character(spec, scene, canvas)
    image.paste(character, mask=character)
    return image.reduce(SUPERSAMPLE)


LABEL_COLUMNS = ("file", "character", "hair", "eyes", "outfit", "background", "expression")


def generate_sample(
    out_dir: Path,
    n_characters: int = 12,
    images_per_character: int = 20,
    seed: int = 0,
    size: int = 384,
) -> Path:
    """Write `out_dir/<character>/<NNN>.png` and `out_dir/labels.csv`; return `out_dir`.

    Each image has its own random stream, keyed by seed, character and number, so an image
    does not change when the counts around it do.
    """
    if images_per_character < 1:
        raise LookalikeError(
            f"the sample needs at least 1 image per character, got {images_per_character}"
        )
    if size < 64:
        raise LookalikeError(f"sample images must be at least 64 pixels wide, got {size}")
    out_dir = Path(out_dir)
    rows: list[dict[str, str]] = []
    for spec in character_specs(n_characters):
        (out_dir / spec.name).mkdir(parents=True, exist_ok=True)
        for j in range(images_per_character):
            rng = random.Random(f"{seed}/{spec.name}/{j}")
            scene = sample_scene(rng, size * SUPERSAMPLE)
            rel = f"{spec.name}/{j:03d}.png"
            draw_image(spec, scene, rng, size).save(out_dir / rel)
            rows.append(
                {
                    "file": rel,
                    "character": spec.name,
                    "hair": spec.hair,
                    "eyes": spec.eyes,
                    "outfit": scene.outfit,
                    "background": scene.background,
                    "expression": scene.expression,
                }
            )
    with open(out_dir / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return out_dir


def sample_folder(out_dir: Path) -> Path:
    """The built-in sample at its defaults in `out_dir`, drawn there unless it is already
    (the measurement scripts score it beside the dev sets)."""
    if not (Path(out_dir) / "labels.csv").exists():
        generate_sample(out_dir)
    return Path(out_dir)
