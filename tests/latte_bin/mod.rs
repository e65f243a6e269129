//! Runs the `latte` binary from integration tests. When the tests themselves run under an emulator
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
