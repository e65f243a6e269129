//! Broken tokenizer data and hostile inputs: every one is a typed error or a correct result,
//! never a panic; long inputs stay fast (BPE is not quadratic). Round-trips of arbitrary text
//! are the oracle where no fixture applies: byte-level BPE must give back any string exactly.

use latte::gguf::{GgufBuilder, MetadataArray, MetadataValue};
use latte::model::ModelFile;
use latte::rng::SplitMix64;
use latte::tokenizer::{
    byte_level, ChatTemplate, Normalizer, PreTokenizer, Tokenizer, TokenizerError, TokenizerParts,
    MAX_INPUT_BYTES,
};

/// The 256 byte tokens (type normal), then `extra` tokens with their types.
fn parts(extra: &[(&str, i64)], merges: &[&str]) -> TokenizerParts {
    let mut tokens: Vec<String> = (0..=255u8)
        .map(|b| byte_level::byte_to_char(b).to_string())
        .collect();
    let mut token_types = vec![1; 256];
    for &(text, ty) in extra {
        tokens.push(text.into());
        token_types.push(ty);
    }
    TokenizerParts {
        tokens,
        token_types,
        merges: merges.iter().map(|m| m.to_string()).collect(),
        pre_tokenizer: PreTokenizer::Qwen2,
        normalizer: Normalizer::None,
        bos_id: None,
        eos_id: None,
        eot_id: None,
        padding_id: None,
        unknown_id: None,
    }
}

fn error(parts: TokenizerParts) -> TokenizerError {
    match Tokenizer::from_parts(parts) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    }
}

#[test]
fn broken_vocabularies_are_typed_errors() {
    let mut empty = parts(&[], &[]);
    empty.tokens.clear();
    empty.token_types.clear();
    assert!(matches!(error(empty), TokenizerError::EmptyVocabulary));

    for (merge, reason) in [
        ("a zz", "right token"),
        ("zz a", "left token"),
        ("a b", "merged token"),
        ("ab", "one space"),
        ("a  b", "one space"),
        (" a", "one space"),
        ("a b c", "one space"),
    ] {
        match error(parts(&[], &[merge])) {
            TokenizerError::InvalidMerge {
                rank: 0, reason: r, ..
            } => {
                assert!(r.contains(reason), "{merge:?}: {r}")
            }
            e => panic!("{merge:?}: {e}"),
        }
    }

    // A normal token must be byte-level text; an added token may be anything.
    assert!(matches!(
        error(parts(&[("日本", 1)], &[])),
        TokenizerError::NotByteLevel { id: 256, .. }
    ));
    assert!(Tokenizer::from_parts(parts(&[("日本", 4), ("<|x|>", 3)], &[])).is_ok());

    assert!(matches!(
        error(parts(&[("x", 9)], &[])),
        TokenizerError::UnknownTokenType {
            id: 256,
            token_type: 9
        }
    ));
    let mut short_types = parts(&[], &[]);
    short_types.token_types.pop();
    assert!(matches!(
        error(short_types),
        TokenizerError::LengthMismatch {
            expected: 256,
            got: 255,
            ..
        }
    ));
    let mut eos = parts(&[], &[]);
    eos.eos_id = Some(256);
    assert!(matches!(
        error(eos),
        TokenizerError::SpecialIdOutOfRange { id: 256, .. }
    ));
}

#[test]
fn a_byte_without_a_token_is_dropped_or_becomes_the_unknown_token() {
    let mut p = parts(&[("<unk>", 2)], &[]);
    // Byte 'z' loses its token (the text no longer names a byte-level character of z).
    p.tokens[b'z' as usize] = "[PAD122]".into();
    p.token_types[b'z' as usize] = 5;
    let tok = Tokenizer::from_parts(p.clone()).unwrap();
    assert_eq!(tok.missing_bytes(), [b'z']);
    assert_eq!(tok.encode("abc", false).unwrap(), vec![97, 98, 99]);
    assert_eq!(tok.encode("xyz", false).unwrap(), vec![120, 121]);
    assert_eq!(tok.encode("zzz", false).unwrap(), Vec::<u32>::new());
    // A padding token is never produced and decodes to nothing.
    assert_eq!(tok.decode(&[b'z' as u32]), "");
    p.unknown_id = Some(256);
    let tok = Tokenizer::from_parts(p.clone()).unwrap();
    assert_eq!(tok.encode("xyz", false).unwrap(), vec![120, 121, 256]);
    p.unknown_id = Some(257);
    assert!(matches!(
        error(p),
        TokenizerError::SpecialIdOutOfRange { id: 257, .. }
    ));
}

/// A vocabulary where runs of `a` merge pairwise: a, aa, aaaa, ... up to 2^levels.
fn doubling(levels: u32) -> Tokenizer {
    let texts: Vec<String> = (1..=levels).map(|k| "a".repeat(1 << k)).collect();
    let merges: Vec<String> = (0..levels as usize)
        .map(|k| {
            let half = "a".repeat(1 << k);
            format!("{half} {half}")
        })
        .collect();
    let extra: Vec<(&str, i64)> = texts.iter().map(|t| (t.as_str(), 1)).collect();
    let merges: Vec<&str> = merges.iter().map(String::as_str).collect();
    Tokenizer::from_parts(parts(&extra, &merges)).unwrap()
}

#[test]
fn long_runs_merge_correctly_and_fast() {
    let tok = doubling(10);
    let top = tok.token_to_id(&"a".repeat(1024)).unwrap();
    // One piece of 256 KiB + 3 letters (a naive quadratic BPE would take hours): 256 tokens of
    // 1024 a's, then "aa", "a".
    let n = (1 << 18) + 3;
    let ids = tok.encode(&"a".repeat(n), false).unwrap();
    assert_eq!(ids.len(), 256 + 2);
    assert!(ids[..256].iter().all(|&id| id == top));
    assert_eq!(tok.decode(&ids).len(), n);

    // Long whitespace and punctuation runs (the lookahead cases) in both pre-tokenizers.
    for pre in [PreTokenizer::Gpt2, PreTokenizer::Qwen2] {
        let mut p = parts(&[], &[]);
        p.pre_tokenizer = pre;
        let tok = Tokenizer::from_parts(p).unwrap();
        let text = format!(
            "{}x{}!{}",
            " ".repeat(100_000),
            "\n ".repeat(30_000),
            "?".repeat(50_000)
        );
        let ids = tok.encode(&text, true).unwrap();
        assert_eq!(ids.len(), text.len());
        assert_eq!(tok.decode(&ids), text);
    }
}

#[test]
fn input_beyond_the_cap_is_refused() {
    let tok = Tokenizer::from_parts(parts(&[], &[])).unwrap();
    let text = " ".repeat(MAX_INPUT_BYTES + 1);
    assert!(matches!(
        tok.encode(&text, true),
        Err(TokenizerError::InputTooLong { .. })
    ));
}

/// Random strings over a mix of ASCII, whitespace, Latin-1, CJK, emoji and specials.
fn random_text(rng: &mut SplitMix64, len: usize) -> String {
    const ALPHABET: &[&str] = &[
        "a", "Z", "'", "s", "9", " ", "  ", "\n", "\r\n", "\t", "\u{a0}", "é", "ſ", "日", "😀",
        "!", "<|x|>", "<|", "|>", ".", "\u{301}", "\u{0}",
    ];
    (0..len)
        .map(|_| ALPHABET[(rng.next_u64() % ALPHABET.len() as u64) as usize])
        .collect()
}

#[test]
fn any_text_round_trips() {
    let merges = ["Ġ a", "' s", "a Z", "Ġa Z"];
    let extra = [("Ġa", 1), ("'s", 1), ("aZ", 1), ("ĠaZ", 1), ("<|x|>", 3)];
    let mut rng = SplitMix64::new(7);
    for pre in [PreTokenizer::Gpt2, PreTokenizer::Qwen2] {
        let mut p = parts(&extra, &merges);
        p.pre_tokenizer = pre;
        let tok = Tokenizer::from_parts(p).unwrap();
        let special = tok.token_to_id("<|x|>").unwrap();
        for len in 0..200 {
            let text = random_text(&mut rng, len % 40);
            for parse_special in [false, true] {
                let ids = tok.encode(&text, parse_special).unwrap();
                assert_eq!(tok.decode(&ids), text, "{pre:?} {text:?}");
                assert_eq!(
                    ids.contains(&special),
                    parse_special && text.contains("<|x|>")
                );
                // Pieces tile the text.
                assert_eq!(pre.pieces(&text).collect::<String>(), text);
            }
        }
    }
}

fn gguf(meta: Vec<(&str, MetadataValue)>) -> ModelFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    let mut b = GgufBuilder::new();
    for (k, v) in meta {
        b.push_metadata(k, v).unwrap();
    }
    b.create(&path).unwrap().finish().unwrap();
    ModelFile::from_bytes("t.gguf", std::fs::read(&path).unwrap()).unwrap()
}

fn tokens() -> MetadataValue {
    MetadataArray::String(
        (0..=255u8)
            .map(|b| byte_level::byte_to_char(b).to_string())
            .collect(),
    )
    .into()
}

#[test]
fn bad_keys_are_typed_errors() {
    let no_merges = MetadataArray::String(Vec::new()).into();
    let base = |model: &str, pre: Option<&str>| -> Vec<(&'static str, MetadataValue)> {
        let mut m: Vec<(&'static str, MetadataValue)> = vec![
            ("tokenizer.ggml.model", model.into()),
            ("tokenizer.ggml.tokens", tokens()),
        ];
        if let Some(pre) = pre {
            m.push(("tokenizer.ggml.pre", pre.into()));
        }
        m
    };
    fn with_merges(
        mut m: Vec<(&'static str, MetadataValue)>,
        merges: &MetadataValue,
    ) -> Vec<(&'static str, MetadataValue)> {
        m.push(("tokenizer.ggml.merges", merges.clone()));
        m
    }
    let ok =
        Tokenizer::from_model_file(&gguf(with_merges(base("gpt2", Some("gpt-2")), &no_merges)))
            .unwrap();
    assert_eq!(ok.pre_tokenizer(), PreTokenizer::Gpt2);
    // A missing `pre` is llama.cpp's `default` regex, not GPT-2's: refused, not guessed.
    assert!(matches!(
        Tokenizer::from_model_file(&gguf(with_merges(base("gpt2", None), &no_merges))),
        Err(TokenizerError::UnsupportedPreTokenizer(_))
    ));
    assert!(matches!(
        Tokenizer::from_model_file(&gguf(with_merges(base("llama", None), &no_merges))),
        Err(TokenizerError::UnsupportedModel(_))
    ));
    assert!(matches!(
        Tokenizer::from_model_file(&gguf(with_merges(base("gpt2", Some("falcon")), &no_merges))),
        Err(TokenizerError::UnsupportedPreTokenizer(_))
    ));
    assert!(matches!(
        Tokenizer::from_model_file(&gguf(base("gpt2", Some("qwen2")))),
        Err(TokenizerError::Model(_))
    ));
    let mut nfd = with_merges(base("gpt2", Some("gpt-2")), &no_merges);
    nfd.push(("latte.tokenizer.normalizer", "nfd".into()));
    assert!(matches!(
        Tokenizer::from_model_file(&gguf(nfd)),
        Err(TokenizerError::UnsupportedNormalizer(_))
    ));
    let numbers: MetadataValue = vec![1i32, 2].into();
    assert!(matches!(
        Tokenizer::from_model_file(&gguf(with_merges(base("gpt2", Some("gpt-2")), &numbers))),
        Err(TokenizerError::Model(_))
    ));
    assert!(matches!(
        Tokenizer::from_model_file(&gguf(vec![])),
        Err(TokenizerError::Model(_))
    ));
}

#[test]
fn chat_templates_fail_as_errors() {
    // No template in the file: ChatML.
    assert!(ChatTemplate::from_model_file(&gguf(vec![]))
        .unwrap()
        .is_fallback());
    assert!(matches!(
        ChatTemplate::new("{% for %}", None, None),
        Err(TokenizerError::Template(_))
    ));
    let raising = ChatTemplate::new("{{ raise_exception('no system role') }}", None, None).unwrap();
    match raising.render(&[], false) {
        Err(TokenizerError::Template(m)) => assert!(m.contains("no system role"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A template that never ends runs out of fuel instead of hanging.
    let endless = ChatTemplate::new(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        None,
        None,
    )
    .unwrap();
    assert!(matches!(
        endless.render(&[], false),
        Err(TokenizerError::Template(_))
    ));
    // Python string methods work as in transformers' Jinja.
    let py = ChatTemplate::new(
        "{{ ' x '.strip() }}{{ eos_token }}",
        None,
        Some("<e>".into()),
    )
    .unwrap();
    assert_eq!(py.render(&[], false).unwrap(), "x<e>");
}
