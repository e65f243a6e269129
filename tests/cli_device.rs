//! `--device`, `--vram-budget` and `latte devices` through the binary: the demo model on wgpu writes
//! the CPU's image within ±2/255 and the CPU's answer; the device plan and the per-phase device
//! peaks are printed; bad devices and budgets fail with one line, a non-zero exit and no PNG.
//! The GPU cases need an adapter (lavapipe in CI) and skip without one unless `LATTE_REQUIRE_GPU=1`.

mod common;
mod latte_bin;

use latte_bin::latte;

#[cfg(feature = "wgpu")]
fn pixels(path: &std::path::Path) -> Vec<u8> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    buf
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn devices_lists_the_cpu() {
    let out = latte(&["devices"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("cpu "), "{stdout}");
}

#[test]
fn bad_devices_fail_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("x.png");
    let p = png.to_str().unwrap();
    // A device that does not parse is a usage error (clap: exit 2).
    let out = latte(&[
        "generate",
        "--prompt",
        "a red circle",
        "--device",
        "cuda",
        "-o",
        p,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a device"), "{}", stderr(&out));
    // An adapter index that does not exist.
    let out = latte(&[
        "generate",
        "--prompt",
        "a red circle",
        "--device",
        "wgpu:99",
        "-o",
        p,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("wgpu:99") || err.contains("no GPU adapter"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!png.exists());
    // A budget that is not a size.
    let out = latte(&[
        "generate",
        "--prompt",
        "a red circle",
        "--vram-budget",
        "lots",
        "-o",
        p,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--vram-budget"), "{}", stderr(&out));
    assert!(!png.exists());
}

#[cfg(feature = "wgpu")]
#[test]
fn demo_generates_and_describes_on_wgpu_as_on_the_cpu() {
    if common::gpu::gpu().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cpu, gpu) = (tmp.path().join("cpu.png"), tmp.path().join("gpu.png"));
    let args = |device: &'static str, out: &std::path::Path| {
        let out = latte(&[
            "generate",
            "--prompt",
            "a blue square",
            "--seed",
            "3",
            "--steps",
            "12",
            "--device",
            device,
            "--quiet",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{device}: {}", stderr(&out));
        stderr(&out)
    };
    args("cpu", &cpu);
    let summary = args("wgpu", &gpu);
    // The summary names the device and reports device memory per phase and the group uploads.
    assert!(summary.contains("device: wgpu"), "{summary}");
    assert!(summary.contains("device peak"), "{summary}");
    assert!(
        summary.contains("expert groups uploaded to the device: 4"),
        "{summary}"
    );
    let (a, b) = (pixels(&cpu), pixels(&gpu));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (*x as i32 - *y as i32).abs())
        .max()
        .unwrap();
    assert!(worst <= 2, "the GPU image differs by {worst}/255");

    let answer = |device: &str| {
        let out = latte(&[
            "describe",
            "--image",
            cpu.to_str().unwrap(),
            "-p",
            "What colour is it?",
            "--device",
            device,
        ]);
        assert!(out.status.success(), "{device}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(answer("wgpu"), answer("cpu"));
}

#[cfg(feature = "wgpu")]
#[test]
fn vram_budgets_are_planned_and_enforced() {
    if common::gpu::gpu().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("x.png");
    let p = png.to_str().unwrap();
    let base = [
        "generate",
        "--prompt",
        "a red circle",
        "--device",
        "wgpu",
        "-o",
        p,
    ];
    // --dry-run predicts device memory per phase.
    let out = latte(&[&base[..], &["--dry-run"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = String::from_utf8(out.stdout).unwrap();
    assert!(plan.contains("expert-group slot(s)"), "{plan}");
    for phase in ["group 0", "group 3", "decode", "device peak"] {
        assert!(plan.contains(phase), "{phase}: {plan}");
    }
    // A budget below one group: refused before running, with both figures, and no PNG.
    let out = latte(&[&base[..], &["--vram-budget", "64K"]].concat());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("needs") && err.contains("budget"), "{err}");
    assert_eq!(
        err.trim().lines().count(),
        2,
        "a software-adapter notice and the error: {err}"
    );
    assert!(!png.exists());
}
