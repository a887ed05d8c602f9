"""Unlabelled text from the manual pages installed on this machine, one sentence per line,
for training the distilled pipeline on more varied text than Python's documentation (by hand):

    python tools/system_prose.py OUT.txt [--count 100000] [--seed 0] [--json]
    python tools/bench_distill.py --text OUT.txt --steps 300

Manual pages (``/usr/share/man``, every language installed: Debian ships French, German,
Spanish, Czech... translations) are troff source: requests (lines starting with ``.``) and
escapes (``\\fB``, ``\\-``, ``\\(em``) are dropped, the text is cut into sentences, and only
sentences of 6 to 60 words, mostly letters, are kept, each once, in a seeded order. Which
pages exist depends on the machine; the script reports how many it read.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import sys
import unicodedata

MAN_ROOT = "/usr/share/man"
#: troff escapes: fonts and sizes (dropped), special characters and strings (``\\(xx``,
#: ``\\[name]``, ``\\*(xx``: translated where known), and the one-character ones.
_ESCAPES = re.compile(
    r"\\f(?:\(..|\[[^]]*\]|.)|\\s[+-]?\d+"
    r"|\\\*?\((?P<two>..)|\\\*?\[(?P<long>[^]]*)\]|\\\*."
    r"|\\(?P<one>[-&e|^ 0~c%:])"
)
#: groff's accent prefixes of composite characters (``\\('e`` is e acute) as combining marks.
_ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", ":": "\u0308", "~": "\u0303", ",": "\u0327", "o": "\u030a", "v": "\u030c"}
_NAMED = {
    "aq": "'", "cq": "'", "oq": "'", "lq": '"', "rq": '"', "dq": '"', "Lq": '"', "Rq": '"', "em": "-", "en": "-",
    "hy": "-", "mi": "-", "bu": "*", "co": "(c)", "rg": "(R)", "tm": "(TM)", "ga": "`", "ti": "~", "ha": "^", "rs": "\\",
}  # fmt: skip
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-ZÀ-ÖØ-Þ¿¡\"'«])")
_WORD = re.compile(r"\w+")


def page_text(source: str) -> str:
    """The running text of a troff page: requests and comments dropped, escapes removed."""
    kept = []
    for line in source.splitlines():
        if line.startswith((".", "'")):
            if kept and kept[-1]:
                kept.append("")  # a request ends a paragraph
            continue
        kept.append(_ESCAPES.sub(_escape, line).replace("\\", "").strip())
    return "\n".join(kept)


def _escape(match: re.Match) -> str:
    """What an escape stands for in running text (nothing for fonts and unknown names)."""
    if match["one"] is not None:
        return "-" if match["one"] == "-" else ""
    name = match["two"] if match["two"] is not None else match["long"]
    if name is None:
        return ""
    if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
        return chr(int(name[1:], 16))
    if len(name) == 2 and name[0] in _ACCENTS and name[1].isalpha():
        return unicodedata.normalize("NFC", name[1] + _ACCENTS[name[0]])
    return _NAMED.get(name, "")


def sentences(text: str):
    """Sentences of 6 to 60 words whose characters are mostly letters and spaces."""
    for paragraph in text.split("\n\n"):
        flat = " ".join(paragraph.split())
        for sentence in _SENTENCE_END.split(flat):
            words = _WORD.findall(sentence)
            if not 6 <= len(words) <= 60:
                continue
            letters = sum(ch.isalpha() or ch.isspace() for ch in sentence)
            if letters >= 0.85 * len(sentence) and sentence[-1] in ".!?":
                yield sentence


def manual_prose(root: str = MAN_ROOT, *, count: int = 100_000, seed: int = 0) -> tuple[list[str], int]:
    """Up to ``count`` distinct sentences of the pages under ``root`` (seeded order), and
    how many pages were read."""
    found: set[str] = set()
    pages = 0
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            path = os.path.join(folder, name)
            try:
                with (gzip.open if name.endswith(".gz") else open)(path, "rb") as f:
                    source = f.read().decode("utf-8", errors="replace")
            except (OSError, EOFError):
                continue
            pages += 1
            found.update(sentences(page_text(source)))
    order = sorted(found, key=lambda s: hashlib.blake2b(f"{seed}:{s}".encode(), digest_size=8).digest())
    return order[:count], pages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the text file to write, one sentence per line")
    parser.add_argument("--count", type=int, default=100_000, help="most sentences written (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the order (default 0)")
    parser.add_argument("--root", default=MAN_ROOT, help=f"where the manual pages are (default {MAN_ROOT})")
    parser.add_argument("--json", action="store_true", help="report as JSON")
    args = parser.parse_args(argv)
    if os.path.exists(args.out):
        parser.error(f"{args.out} exists; not overwriting it")
    texts, pages = manual_prose(args.root, count=args.count, seed=args.seed)
    if not texts:
        parser.error(f"no sentences found under {args.root}")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    report = {"out": args.out, "pages_read": pages, "sentences": len(texts), "bytes": os.path.getsize(args.out)}
    print(json.dumps(report) if args.json else f"{args.out}: {len(texts):,} sentences from {pages:,} manual pages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
