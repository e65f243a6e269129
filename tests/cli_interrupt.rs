//! An interrupted `convert` or `quantize` leaves nothing behind: SIGINT / SIGTERM remove the
//! temporary file being written and the process exits 130 / 143, as a shell reports a process
//! killed by the signal. Each run is signalled while its temporary output exists (polled for), so
//! the test does not depend on timing.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use latte::dtype::TensorType;
use latte_bin::latte_command;

#[path = "latte_bin/mod.rs"]
mod latte_bin;
use latte::gguf::GgufBuilder;

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Starts `latte args`, waits until a temporary file with data appears in `dir`, sends
/// `signal`, and returns the exit code and stderr.
fn interrupt(args: &[&str], dir: &Path, signal: libc::c_int) -> (Option<i32>, String) {
    let mut child = latte_command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let writing = listing(dir).iter().any(|name| {
            name.ends_with(".tmp") && std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() > 0)
        });
        if writing {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{args:?} finished ({status}) before it could be interrupted");
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no temporary file appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on a child this test spawned and has not yet waited for (so the pid is
    // still its own); no memory is passed.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "kill failed");
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn sigint_during_convert_removes_the_temporary_file_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.gguf");
    // The paper-size synthetic model: gigabytes, so the write is still running when signalled.
    let (code, stderr) = interrupt(
        &[
            "convert",
            "--synthetic",
            "latte-flow-2b",
            "--type",
            "q8_0",
            "-o",
            out.to_str().unwrap(),
            "--quiet",
        ],
        dir.path(),
        libc::SIGINT,
    );
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("removed 1 temporary file"), "{stderr}");
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}

/// A 256 MiB F32 input, so that quantizing it takes seconds.
fn big_input(dir: &Path) -> PathBuf {
    let path = dir.join("input").join("big-f32.gguf");
    std::fs::create_dir(path.parent().unwrap()).unwrap();
    let mut builder = GgufBuilder::new();
    for i in 0..64 {
        builder
            .push_tensor(
                format!("blk.{i}.ffn_up.weight"),
                TensorType::F32,
                &[4096, 256],
            )
            .unwrap();
    }
    let mut writer = builder.create(&path).unwrap();
    let data: Vec<f32> = (0..4096 * 256)
        .map(|i| ((i % 977) as f32 - 488.0) / 97.0)
        .collect();
    for i in 0..64 {
        writer
            .write_tensor(
                &format!("blk.{i}.ffn_up.weight"),
                bytemuck::cast_slice(&data),
            )
            .unwrap();
    }
    writer.finish().unwrap();
    path
}

#[test]
fn sigterm_during_quantize_removes_the_temporary_file_and_exits_143() {
    let dir = tempfile::tempdir().unwrap();
    let input = big_input(dir.path());
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    // An existing output must survive the interrupted replacement untouched.
    let out = out_dir.join("q6_k.gguf");
    std::fs::write(&out, b"the previous file").unwrap();
    let (code, stderr) = interrupt(
        &[
            "quantize",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "Q6_K",
        ],
        &out_dir,
        libc::SIGTERM,
    );
    assert_eq!(code, Some(143), "{stderr}");
    assert_eq!(listing(&out_dir), vec!["q6_k.gguf".to_string()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous file");
}
