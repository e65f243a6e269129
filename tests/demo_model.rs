//! The demo model embedded in the binary (`assets/demo-f16.gguf`, written by
//! tools/make_demo_gguf.sh) is exactly what converting the demo checkpoint gives today, so the
//! two cannot drift apart: retraining tools/reference/demo_model without rerunning the script
//! fails here.

use std::path::Path;

use latte::convert::quantize::QuantizeOptions;
use latte::convert::Checkpoint;

#[test]
fn embedded_demo_model_is_the_converted_demo_checkpoint() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo-f16.gguf");
    let options = QuantizeOptions::parse("f16", &[]).unwrap();
    Checkpoint::plan(&root.join("tools/reference/demo_model"), &options)
        .unwrap()
        .write(&out, &mut |_| {})
        .unwrap();
    let converted = std::fs::read(&out).unwrap();
    let committed = std::fs::read(root.join("assets/demo-f16.gguf")).unwrap();
    assert!(
        converted == committed,
        "assets/demo-f16.gguf is stale ({} vs {} bytes): run tools/make_demo_gguf.sh",
        committed.len(),
        converted.len()
    );
}
