//! Runs the `latte` binary from integration tests, and reads the text chunks of the PNGs it
//! writes. When the tests themselves run under an emulator
//! (aarch64 under qemu in CI), the child is started through the same runner cargo was given, since
//! the emulated test cannot exec a foreign binary directly.

use std::process::{Command, Output};

#[allow(dead_code)] // see latte_command
pub fn latte(args: &[&str]) -> Output {
    latte_command(args).output().unwrap()
}

/// The command that runs `latte args` (through the emulator when there is one), for tests that
/// need the child itself: its stdin, a signal, a reader of its output.
#[allow(dead_code)] // not every test binary that includes this module spawns children itself
pub fn latte_command(args: &[&str]) -> Command {
    let exe = env!("CARGO_BIN_EXE_latte");
    let runner = if cfg!(all(target_arch = "aarch64", target_os = "linux")) {
        std::env::var("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER").unwrap_or_default()
    } else {
        String::new()
    };
    let mut words = runner.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    command.args(args);
    command
}

/// The text chunks (tEXt and iTXt) of a PNG: the generation parameters `latte generate` stores.
#[allow(dead_code)] // used by the generate tests only
pub fn png_text(bytes: &[u8]) -> Vec<(String, String)> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    out.extend(
        info.utf8_text
            .iter()
            .map(|t| (t.keyword.clone(), t.get_text().unwrap())),
    );
    out
}
