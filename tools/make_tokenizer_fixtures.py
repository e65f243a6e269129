"""Writes tests/fixtures/tokenizer/tokenizer_cases.json: the oracle for latte's tokenizer and chat template.

Run with the reference venv (HF `tokenizers` and `transformers`):

    /work/wt/reference/.venv/bin/python tools/make_tokenizer_fixtures.py

For each tokenizer (the base fixture checkpoint's; the demo model's; the base one with Qwen2's
split-regex pre-tokenizer and NFC normalizer in place of GPT-2's regex; the base one with three added
tokens that are not special) it records, for ~85 tricky strings, the ids HF `tokenizers` gives with
special tokens parsed and with them treated as plain text (`encode_special_tokens = True`), the text
`decode` gives back for those ids, and the pre-tokenizer's pieces of each (normalized) string in
byte-level form, so the split is checked on its own and not only through the tiny vocabularies; and
the decoding of seeded random id sequences (invalid UTF-8 included). It also records chat templates
rendered by transformers' `apply_chat_template`. Deterministic: a fixed seed, sorted keys.
"""

import copy
import json
import os
import random
import shutil
import tempfile

from tokenizers import AddedToken, Tokenizer
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "tokenizer_cases.json")

SOURCES = {
    "base": "tests/fixtures/reference/base/checkpoint",
    "demo": "tools/reference/demo_model",
}

# Qwen2's normalizer and pre-tokenizer, as Qwen2 / Qwen2-VL's tokenizer.json writes them.
QWEN2_NORMALIZER = {"type": "NFC"}
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
    ],
}

STRINGS = [
    # captions and questions like the model's
    "a red star on the left",
    "A small blue circle in the top right corner.",
    "What shape is it?",
    "Describe the image.",
    "a green triangle below a yellow square",
    "hello world",
    "Hello, World!",
    # unicode
    "héllo wörld",
    "日本語のテキスト",
    "中文字符测试，标点。",
    "한국어 문장",
    "emoji 😀👍🏽 test",
    "👨‍👩‍👧",
    "Ελληνικά κείμενο",
    "Привет мир",
    "العربية",
    "ǅungla ﬁne",
    "cafe\u0301 vs café",
    "A\u030a\u0323 e\u0301\u0301 \u212b \uac00\u11a8 \u1100\u1161",
    "ÀÉÎÕÜ",
    "—dash–and…",
    # digits
    "12345",
    "3.14159",
    "year 2024!",
    "1,000,000",
    "٣٤٥ arabic-indic ½ ²",
    "a1b22c333d4444",
    # contractions
    "don't",
    "I'M HERE",
    "they'll've",
    "it's O'Reilly's",
    "'s",
    "'ſ and 'K",
    "'ſx 'Sx 'STx",
    "She'D We'Re",
    "''",
    "' s",
    # whitespace and newlines
    "  leading",
    "trailing  ",
    "a  b",
    "a   b   c",
    "\t\ttabs\there",
    "\n",
    "\n\n\n",
    "line1\nline2",
    "line1\r\nline2",
    "  \n  \n  x",
    "a\n\n  b",
    "x \n y",
    "   ",
    " ",
    "\u00a0nbsp \u00a0",
    "\u3000ideographic\u3000space",
    "end.\n\n",
    "!!!\n\nnext",
    "?\r\n",
    " 12 ",
    "\nHello",
    "tab\tsep",
    "\u2028line\u2029sep",
    # special tokens inline
    "<|im_start|>user\nhi<|im_end|>\n",
    "<|vision_start|><|image_pad|><|vision_end|>What?",
    "a<|endoftext|>b",
    "<|im_end",
    "<|im_start|><|im_start|>",
    "<<|im_end|>>",
    " <|im_end|> ",
    # misc
    "",
    "a",
    "foo_bar-baz",
    "https://example.com/path?q=1&x=2",
    "x=y+z*2",
    "...",
    "\u0000nul\u0001",
    "the the the the the the the the",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "a,,,\n\n\nb",
    "(x)\r\n\r\n  y",
    "  !  ",
    "x\u00a0\u00a0y",
    "1 2  3   4",
    "\t\n \tword",
    "é!é?é",
    "  \u2028 ok",
]

EXTRA_ADDED = ["<tag>", "日本", "Ġhi"]
ADDED_STRINGS = ["a<tag>b <tag> 日本語 <|im_end|><tag>", "Ġhi hi Ġhi", "<ta<tag>g>"]

CHATS = [
    ([{"role": "user", "content": "What shape is it?"}], False),
    ([{"role": "user", "content": "What shape is it?"}], True),
    (
        [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Describe a red star."},
        ],
        True,
    ),
    ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape is it?"}]}], True),
    ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape is it?"}]}], False),
    (
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare "},
                    {"type": "image"},
                    {"type": "text", "text": " and "},
                    {"type": "image"},
                ],
            }
        ],
        True,
    ),
]

# Templates beyond the fixtures' own, rendered by transformers with the base tokenizer: Qwen2-VL's
# (namespace counters, loop.first, `in` tests, a default system message) and one that leans on
# Python string methods, filters and whitespace control.
EXTRA_TEMPLATES = {
    "qwen2vl": (
        "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
        "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
        "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
        "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
        "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
        "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
        "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif content['type'] == 'video' or 'video' in content %}"
        "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
        "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
        "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "pycompat": (
        "{%- for message in messages -%}\n"
        "{%- if message['role'] == 'system' -%}\n"
        "[SYS] {{ message['content'].strip() | upper }}\n"
        "{% elif message['content'] is string -%}\n"
        "{{ message['role'].title() }}: {{ message['content'].strip().replace('?', ' ?') }}"
        "{% if message['content'].endswith('?') %} (question){% endif %}\n"
        "{% else -%}\n"
        "{{ message['role'] }}:{% for c in message['content'] %}{% if c.type == 'image' %} [img{{ loop.index }}]"
        "{% else %} {{ c.text | trim }}{% endif %}{% endfor %}\n"
        "{% endif -%}\n"
        "{%- endfor -%}\n"
        "{%- if add_generation_prompt %}assistant ({{ messages | length }} turns){{ eos_token }}{% endif %}"
    ),
}


def tokenizer_dir(name: str, tmp: str) -> str:
    """The checkpoint directory's tokenizer files, with the Qwen2 pre-tokenizer for 'base_qwen2'."""
    if name != "base_qwen2":
        return os.path.join(ROOT, SOURCES[name])
    out = os.path.join(tmp, name)
    os.makedirs(out)
    src = os.path.join(ROOT, SOURCES["base"])
    for f in ["tokenizer_config.json", "chat_template.jinja"]:
        shutil.copy(os.path.join(src, f), out)
    with open(os.path.join(src, "tokenizer.json")) as f:
        tok = json.load(f)
    tok["pre_tokenizer"] = copy.deepcopy(QWEN2_PRE_TOKENIZER)
    tok["normalizer"] = copy.deepcopy(QWEN2_NORMALIZER)
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    return out


def encode_cases(tok: Tokenizer, strings=STRINGS) -> list:
    cases = []
    for text in strings:
        tok.encode_special_tokens = False
        special = tok.encode(text, add_special_tokens=False).ids
        tok.encode_special_tokens = True
        plain = tok.encode(text, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        # The pieces of the normalized text, as the tokenizer pre-tokenizes it.
        normalized = tok.normalizer.normalize_str(text) if tok.normalizer else text
        pieces = [p for p, _ in tok.pre_tokenizer.pre_tokenize_str(normalized)]
        cases.append(
            {
                "text": text,
                "pieces": pieces,
                "ids_special": special,
                "ids_plain": plain,
                "decoded_special": tok.decode(special, skip_special_tokens=False),
                "decoded_plain": tok.decode(plain, skip_special_tokens=False),
            }
        )
    return cases


def decode_cases(tok: Tokenizer, rng: random.Random) -> list:
    vocab = tok.get_vocab_size(with_added_tokens=True)
    cases = []
    for n in [1, 1, 2, 3, 5, 8, 13, 21, 34]:
        for _ in range(3):
            ids = [rng.randrange(vocab) for _ in range(n)]
            cases.append({"ids": ids, "text": tok.decode(ids, skip_special_tokens=False)})
    return cases


def main():
    rng = random.Random(20261126)
    out = {"qwen2_pre_tokenizer": QWEN2_PRE_TOKENIZER, "tokenizers": {}, "chats": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["base", "demo", "base_qwen2"]:
            d = tokenizer_dir(name, tmp)
            tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            out["tokenizers"][name] = {
                "checkpoint": SOURCES["base" if name == "base_qwen2" else name],
                "pre_tokenizer": QWEN2_PRE_TOKENIZER if name == "base_qwen2" else None,
                "normalizer": QWEN2_NORMALIZER if name == "base_qwen2" else None,
                "encode": encode_cases(tok),
                "decode": decode_cases(tok, rng),
            }
        # Added tokens that are not special (llama.cpp's user-defined): matched with or without
        # special parsing, decoded through the byte-level map when their text is byte-level.
        tok = Tokenizer.from_file(os.path.join(ROOT, SOURCES["base"], "tokenizer.json"))
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in EXTRA_ADDED])
        out["tokenizers"]["base_added"] = {
            "checkpoint": SOURCES["base"],
            "pre_tokenizer": None,
            "normalizer": None,
            "added_tokens": EXTRA_ADDED,
            "encode": encode_cases(tok, STRINGS + ADDED_STRINGS),
            "decode": decode_cases(tok, rng),
        }
        for name in ["base", "demo"]:
            hf = AutoTokenizer.from_pretrained(os.path.join(ROOT, SOURCES[name]))
            for messages, add_generation_prompt in CHATS:
                text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
                out["chats"].append(
                    {
                        "template": None,
                        "tokenizer": name,
                        "messages": messages,
                        "add_generation_prompt": add_generation_prompt,
                        "text": text,
                    }
                )
        hf = AutoTokenizer.from_pretrained(os.path.join(ROOT, SOURCES["base"]))
        for template_name, template in EXTRA_TEMPLATES.items():
            for messages, add_generation_prompt in CHATS:
                text = hf.apply_chat_template(
                    messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
                )
                out["chats"].append(
                    {
                        "template": template_name,
                        "template_source": template,
                        "tokenizer": "base",
                        "messages": messages,
                        "add_generation_prompt": add_generation_prompt,
                        "text": text,
                    }
                )
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, ensure_ascii=True, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
