//! The `latte` command: a thin shell over the library (see `cli`).

mod cli;

fn main() -> std::process::ExitCode {
    quiet_headless_vulkan();
    cli::run()
}

/// Mesa's software Vulkan (lavapipe) asks libwayland for a display while listing adapters, and
/// without `XDG_RUNTIME_DIR` (containers, CI) libwayland prints two "error" lines on every run.
/// Pointing it at the temp directory, where no compositor listens, makes that probe fail quietly.
/// Set before any thread starts; only when the variable is absent.
fn quiet_headless_vulkan() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
}
