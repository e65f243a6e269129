//! Arbitrary bytes into `GgufFile::from_bytes`; when accepted, every tensor view is read in full
//! and every key looked up, the way a model loader would. Any panic, out-of-bounds read (ASan),
//! leak or timeout is a finding.
#![no_main]

use latte::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = match GgufFile::from_bytes(data.to_vec()) {
        Ok(f) => f,
        Err(e) => {
            // Messages must render for any input.
            std::hint::black_box(e.to_string());
            return;
        }
    };
    let len = file.bytes().len() as u64;
    for info in file.tensor_infos() {
        let view = file
            .tensor(&info.name)
            .expect("a validated tensor has a view");
        assert_eq!(view.bytes().len() as u64, info.n_bytes);
        assert!(info.offset + info.n_bytes <= len);
        assert_eq!(info.offset % file.alignment(), 0);
        let mut acc = 0u8;
        for r in 0..view.n_rows() {
            acc ^= view.row(r).iter().fold(0, |a, &b| a ^ b);
        }
        std::hint::black_box(acc);
        if let Ok(xs) = view.as_f32() {
            std::hint::black_box(xs.iter().sum::<f32>());
        }
    }
    assert_eq!(file.tensors().count(), file.tensor_infos().len());
    for (key, value) in file.metadata() {
        // The very same entry (not `==`: a NaN float value is not equal to itself).
        assert!(file.get(key).is_some_and(|v| std::ptr::eq(v, value)));
        std::hint::black_box(format!("{value:?}"));
    }
});
