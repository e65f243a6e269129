//! Ctrl-C, `kill` and a closed terminal: every temporary file the process made is removed, then
//! the process exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM, 129 for
//! SIGHUP), as a shell reports a process killed by it.
//!
//! The signals are received on a thread of their own (signal-hook's iterator), so the cleanup
//! runs as ordinary code, not in a signal handler; `latte::output` makes sure nothing is created
//! after the sweep.

/// Starts the thread that waits for the signals. Failing to install it is not fatal (the default
/// action still stops the process, only temporary files may remain), so it is reported and ignored.
#[cfg(unix)]
pub fn install() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("latte: warning: cannot handle interrupts ({error}); an interrupted run may leave temporary files");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("latte-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let removed = latte::output::remove_temporary_files();
                if removed > 0 {
                    eprintln!("\nlatte: interrupted; removed {removed} temporary file(s)");
                } else {
                    eprintln!("\nlatte: interrupted");
                }
                // `_exit`: no destructors or atexit handlers racing the threads still computing.
                signal_hook::low_level::exit(128 + signal);
            }
        });
    if let Err(error) = spawned {
        eprintln!("latte: warning: cannot handle interrupts ({error})");
    }
}

/// Elsewhere the default action applies (Windows ends the process on Ctrl-C); temporary files
/// are removed on every error path but not on an interrupt.
#[cfg(not(unix))]
pub fn install() {}
