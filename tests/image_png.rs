//! PNG output: the file decodes (with the `png` crate's reader) to the bytes `to_rgb8` gives and
//! carries the text chunks; failures leave no file and no temporary behind.

use latte::image::{to_rgb8, write_png, ImageError};
use latte::output::OutputError;

fn gradient(h: usize, w: usize) -> Vec<f32> {
    (0..3 * h * w)
        .map(|i| ((i * 37) % 300) as f32 / 150.0 - 1.0)
        .collect()
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn writes_rgb_pixels_and_text_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("out.png");
    let (h, w) = (5, 7);
    let image = gradient(h, w);
    let text = [
        ("prompt", "a red star on the left"),
        ("seed", "1234"),
        ("steps", "4"),
        ("guidance", "3"),
        ("sampler", "euler"),
        ("model", "tiny — ünïcode ☆"),
    ];
    write_png(&path, &image, h, w, &text).unwrap();
    assert_eq!(entries(tmp.path()), ["out.png"]);

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!((frame.width, frame.height), (w as u32, h as u32));
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    assert_eq!(frame.bit_depth, png::BitDepth::Eight);
    assert_eq!(&buf[..frame.buffer_size()], to_rgb8(&image, h, w).unwrap());

    let info = reader.info();
    let mut found: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    for t in &info.utf8_text {
        found.push((t.keyword.clone(), t.get_text().unwrap()));
    }
    for (k, v) in text {
        assert!(
            found.iter().any(|(fk, fv)| fk == k && fv == v),
            "{k} missing from {found:?}"
        );
    }
    // Latin-1 values are plain tEXt chunks.
    assert!(info
        .uncompressed_latin1_text
        .iter()
        .any(|t| t.keyword == "prompt"));

    // Overwriting an existing file replaces it whole.
    write_png(&path, &gradient(2, 2), 2, 2, &[]).unwrap();
    let reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()))
        .read_info()
        .unwrap();
    assert_eq!(reader.info().width, 2);
}

#[test]
fn failures_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    // A directory that does not exist: refused before anything is written.
    let missing = tmp.path().join("no/such/dir/out.png");
    let err = write_png(&missing, &gradient(2, 2), 2, 2, &[]).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Output(OutputError::MissingDirectory { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("out.png"), "{err}");

    // The target is a directory: refused by name, the directory untouched.
    let target = tmp.path().join("taken.png");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let err = write_png(&target, &gradient(2, 2), 2, 2, &[]).unwrap_err();
    assert!(
        matches!(err, ImageError::Output(OutputError::Directory { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("is a directory"), "{err}");
    assert_eq!(entries(&target), ["keep"]);
    assert_eq!(entries(tmp.path()), ["taken.png"]);

    // Bad input is refused before any file is touched.
    let out = tmp.path().join("out.png");
    assert!(matches!(
        write_png(&out, &gradient(2, 2), 3, 2, &[]),
        Err(ImageError::Shape { .. })
    ));
    assert!(matches!(
        write_png(&out, &gradient(2, 2), 2, 2, &[("bad  key", "v")]),
        Err(ImageError::TextKey { .. })
    ));
    assert!(matches!(
        write_png(&out, &[], 0, 0, &[]),
        Err(ImageError::Size { .. })
    ));
    assert_eq!(entries(tmp.path()), ["taken.png"]);
}

#[cfg(unix)]
#[test]
fn read_only_directory_is_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ro");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores directory permissions; the check only means something for other users.
    let probe = dir.join("probe");
    if std::fs::write(&probe, b"").is_ok() {
        std::fs::remove_file(&probe).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        return;
    }
    let err = write_png(&dir.join("out.png"), &gradient(2, 2), 2, 2, &[]).unwrap_err();
    assert!(
        matches!(err, ImageError::Output(OutputError::Io { .. })),
        "{err}"
    );
    assert_eq!(entries(&dir), Vec::<String>::new());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}
