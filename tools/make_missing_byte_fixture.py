#!/usr/bin/env python3
"""Fixture: what HF `tokenizers` does with bytes that have no token in a byte-level BPE.

A vocabulary built from GPT-2's byte alphabet without two bytes ('\\n' and 'x'), a few merges
(one across the missing 'x': "a" + "b"), Qwen2's pre-tokenizer; encoded with `unk_token` unset
(the bytes are dropped and their neighbours merge across them) and set (the unknown token takes
each missing byte's place). Writes tests/fixtures/tokenizer/missing_byte.json (a few KB):

    python3 tools/make_missing_byte_fixture.py

Needs `pip install tokenizers`.
"""

import json
import os

import tokenizers
from tokenizers import Tokenizer
from tokenizers.pre_tokenizers import ByteLevel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Qwen2's pre-tokenizer as tools/make_tokenizer_fixtures.py recorded it.
with open(os.path.join(ROOT, "tests", "fixtures", "tokenizer", "tokenizer_cases.json")) as f:
    QWEN2_PRE_TOKENIZER = json.load(f)["qwen2_pre_tokenizer"]
MISSING = [b"\n", b"x"]
MERGES = [("a", "b"), ("Ġ", "a"), ("Ġa", "b")]
STRINGS = ["a b", "axb", "a\nb", "line one\nline two\n\n", "xx", "x", "\n", "ab xab", "tax\nexam",
           "no missing bytes here", "x\nx\nx", "ax\nb ax"]


def byte_chars():
    # GPT-2's map from bytes to printable characters, as tokenizers' ByteLevel uses it.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer(vocab, unk):
    spec = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": QWEN2_PRE_TOKENIZER, "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": [list(m) for m in MERGES]},
    }
    return Tokenizer.from_str(json.dumps(spec))


def main():
    chars = byte_chars()
    assert set(chars.values()) == set(ByteLevel.alphabet())
    missing = {chars[b[0]] for b in MISSING}
    tokens = [chars[b] for b in range(256) if chars[b] not in missing]
    tokens += ["".join(m) for m in MERGES]
    out = {"tokenizers_version": tokenizers.__version__, "missing_bytes": [b[0] for b in MISSING],
           "merges": [" ".join(m) for m in MERGES], "cases": {}}
    for unk in [None, "<unk>"]:
        names = tokens + ([unk] if unk else [])
        vocab = {t: i for i, t in enumerate(names)}
        tok = tokenizer(vocab, unk)
        out["cases"]["unk" if unk else "no_unk"] = {
            "tokens": names,
            "unknown_id": vocab[unk] if unk else None,
            "encode": [{"text": s, "ids": tok.encode(s, add_special_tokens=False).ids} for s in STRINGS],
        }
    path = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "missing_byte.json")
    with open(path, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
