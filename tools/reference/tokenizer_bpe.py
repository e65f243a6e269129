"""The demo tokenizer: a byte-level BPE (Qwen2 style) trained on the dataset's texts, with the chat template.

This module owns special tokens, their ids and the chat template. It must not know about models.
The chat template is Qwen2-VL's without the default system message: each message is
"<|im_start|>{role}\n{content}<|im_end|>\n", an image item is "<|vision_start|><|image_pad|><|vision_end|>".
"""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_bpe(texts: list, vocab_size: int) -> PreTrainedTokenizerFast:
    """Specials get ids 0..6 (in SPECIALS order); then the 256 byte symbols; then merges."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[1:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def special_ids(tok) -> dict:
    ids = {s: tok.convert_tokens_to_ids(s) for s in SPECIALS}
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def corpus() -> list:
    """Every text the demo model reads or writes (captions, questions, answers, chat roles)."""
    import shapes_data as d

    texts = d.all_captions() + list(d.QUESTIONS.values())
    texts += [f"a {s}" for s in d.SHAPES] + list(d.COLOURS) + ["user\n", "assistant\n", "system\n"]
    return texts
