//! `latte tokenize` through the binary: the ids are the library tokenizer's (itself checked
//! against HF `tokenizers` in tests/tokenizer_*.rs) for the embedded demo model, special tokens
//! parsed unless `--no-special`; the three output forms; text from a file and standard input;
//! bad inputs end in one error line and exit 1.

mod latte_bin;

use std::io::Write;
use std::process::Stdio;

use latte::model::ModelFile;
use latte::tokenizer::Tokenizer;
use latte_bin::{latte, latte_command};

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/demo-f16.gguf");
const TEXT: &str = "<|im_start|>user\na red  circle, it's \"big\"\t🙂<|im_end|>";

fn tokenizer() -> Tokenizer {
    Tokenizer::from_model_file(&ModelFile::open(DEMO).unwrap()).unwrap()
}

fn ids_of(stdout: &[u8]) -> Vec<u32> {
    let text = String::from_utf8(stdout.to_vec()).unwrap();
    let list = text
        .trim()
        .strip_prefix('[')
        .unwrap()
        .strip_suffix(']')
        .unwrap();
    list.split(", ").map(|id| id.parse().unwrap()).collect()
}

#[test]
fn ids_are_the_tokenizers_with_and_without_special_parsing() {
    let tokenizer = tokenizer();
    let out = latte(&["tokenize", "-p", TEXT, "--ids"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = ids_of(&out.stdout);
    assert_eq!(ids, tokenizer.encode(TEXT, true).unwrap());
    assert_eq!(ids.first(), tokenizer.token_to_id("<|im_start|>").as_ref());
    let count = format!("{} tokens", ids.len());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&count));
    // -m names the same file as the embedded demo.
    let named = latte(&["tokenize", "-m", DEMO, "-p", TEXT, "--ids"]);
    assert_eq!(named.stdout, out.stdout);

    let plain = latte(&["tokenize", "-p", TEXT, "--ids", "--no-special"]);
    let plain = ids_of(&plain.stdout);
    assert_eq!(plain, tokenizer.encode(TEXT, false).unwrap());
    assert!(!plain.contains(&tokenizer.token_to_id("<|im_start|>").unwrap()));
}

#[test]
fn lines_and_pieces_show_each_token() {
    let tokenizer = tokenizer();
    let ids = tokenizer.encode(TEXT, true).unwrap();
    let out = latte(&["tokenize", "-p", TEXT]);
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), ids.len());
    for (line, id) in lines.iter().zip(&ids) {
        let (number, _) = line.split_once(" -> '").unwrap();
        assert_eq!(number.trim().parse::<u32>().unwrap(), *id, "{line}");
    }
    assert_eq!(lines[0].trim(), format!("{} -> '<|im_start|>'", ids[0]));
    // Pieces, one per line: escapes undone and bytes rejoined, they are the text again.
    let out = latte(&["tokenize", "-p", TEXT, "--pieces"]);
    let mut bytes = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                let mut buf = [0; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            match chars.next().unwrap() {
                'n' => bytes.push(b'\n'),
                't' => bytes.push(b'\t'),
                'x' => {
                    let hex: String = chars.by_ref().take(2).collect();
                    bytes.push(u8::from_str_radix(&hex, 16).unwrap());
                }
                other => bytes.push(other as u8),
            }
        }
    }
    assert_eq!(String::from_utf8(bytes).unwrap(), TEXT);
}

#[test]
fn text_comes_from_a_file_or_standard_input() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("prompt.txt");
    std::fs::write(&path, TEXT).unwrap();
    let from_file = latte(&["tokenize", "-f", path.to_str().unwrap(), "--ids"]);
    assert!(from_file.status.success());
    assert_eq!(
        ids_of(&from_file.stdout),
        tokenizer().encode(TEXT, true).unwrap()
    );

    let mut child = latte_command(&["tokenize", "-f", "-", "--ids"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(TEXT.as_bytes())
        .unwrap();
    let from_stdin = child.wait_with_output().unwrap();
    assert_eq!(from_stdin.stdout, from_file.stdout);
}

#[test]
fn bad_inputs_fail_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let not_utf8 = tmp.path().join("bytes.bin");
    std::fs::write(&not_utf8, [0xff, 0xfe, 0x00]).unwrap();
    let no_tokenizer = tmp.path().join("synthetic.gguf");
    let made = latte(&[
        "convert",
        "--synthetic",
        "latte-flow-tiny",
        "-o",
        no_tokenizer.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let cases = [
        (vec!["tokenize", "-f", "/dev/zero"], "more than"),
        (
            vec!["tokenize", "-f", not_utf8.to_str().unwrap()],
            "not UTF-8",
        ),
        (
            vec!["tokenize", "-f", tmp.path().to_str().unwrap()],
            "cannot read",
        ),
        (
            vec!["tokenize", "-m", "/nonexistent.gguf", "-p", "x"],
            "nonexistent",
        ),
        (
            vec!["tokenize", "-m", no_tokenizer.to_str().unwrap(), "-p", "x"],
            "no tokenizer",
        ),
    ];
    for (args, expected) in cases {
        let out = latte(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("latte: error:") && err.contains(expected),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    // Without text: clap's usage error.
    assert_eq!(latte(&["tokenize"]).status.code(), Some(2));
}

/// A vocabulary without the newline's byte token: one warning line, and the byte is dropped (HF
/// `tokenizers`' behaviour; tests/tokenizer_hf.rs checks the ids against it).
#[test]
fn a_vocabulary_missing_a_byte_warns_once_and_drops_it() {
    use latte::gguf::{GgufBuilder, MetadataArray, MetadataValue};
    let demo = ModelFile::open(DEMO).unwrap();
    let newline = latte::tokenizer::byte_level::byte_to_char(b'\n').to_string();
    let mut builder = GgufBuilder::new();
    for (key, value) in demo.gguf().metadata() {
        if !key.starts_with("tokenizer.") {
            continue;
        }
        let value = match (key.as_str(), value) {
            ("tokenizer.ggml.tokens", MetadataValue::Array(MetadataArray::String(tokens))) => {
                let tokens = tokens
                    .iter()
                    .map(|t| {
                        if *t == newline {
                            "[PAD9999]".to_string()
                        } else {
                            t.clone()
                        }
                    })
                    .collect();
                MetadataValue::Array(MetadataArray::String(tokens))
            }
            _ => value.clone(),
        };
        builder.push_metadata(key.clone(), value).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("no-newline.gguf");
    std::fs::write(&path, builder.header().unwrap()).unwrap();

    let out = latte(&[
        "tokenize",
        "-m",
        path.to_str().unwrap(),
        "-p",
        "a\nb\n",
        "--ids",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("0x0a") && warnings[0].contains("dropped"),
        "{err}"
    );
    assert_eq!(ids_of(&out.stdout), tokenizer().encode("ab", true).unwrap());
}
