//! The DC-AE decoder against its oracles: diffusers' `AutoencoderDC` through the reference
//! fixtures (`base`: ResBlocks, interpolate up-sampling, RMSNorm, SiLU; converted in-test with
//! `latte convert`'s library) and `tests/fixtures/dcae/` (tools/reference/make_dcae_fixtures.py:
//! EfficientViT blocks with multi-scale attention, pixel-shuffle up-sampling, batch norm, other
//! activations). Also the PNG bytes against the reference's uint8 image, the peak-memory
//! prediction against what a decode really holds, and bad input.
//!
//! Tolerance: the decoder is f32 throughout, as diffusers ran it; the only differences are the
//! order of summation in convolutions and norms (and x·(1/√v) versus torch's fused kernels), a few
//! ulp per operation that grow over ~10 layers. 1e-4 of the image's largest magnitude covers that
//! with margin (measured worst errors are printed by `cargo test -- --nocapture`).

mod dcae_support;

use dcae_support::*;
use latte::convert::quantize::{parse_target_type, QuantizeOptions};
use latte::convert::Checkpoint;
use latte::model::dcae::{Decoder, DecoderScratch};
use latte::model::ModelFile;

const TOLERANCE: f32 = 1e-4;

fn base_gguf(dir: &std::path::Path) -> std::path::PathBuf {
    let options = QuantizeOptions {
        target: parse_target_type("f32").unwrap(),
        rules: Vec::new(),
    };
    let out = dir.join("base.gguf");
    let checkpoint = root().join("tests/fixtures/reference/base/checkpoint");
    Checkpoint::plan(&checkpoint, &options)
        .unwrap()
        .write(&out, &mut |_| {})
        .unwrap();
    out
}

#[test]
fn base_fixture_final_latent_decodes_to_the_reference_image() {
    let tmp = tempfile::tempdir().unwrap();
    let file = ModelFile::open(base_gguf(tmp.path())).unwrap();
    let decoder = Decoder::load(&file).unwrap();
    let tensors = root().join("tests/fixtures/reference/base/tensors.safetensors");
    let (latent_shape, latent) = read_tensor(&tensors, "gen.final_latent");
    let (image_shape, want) = read_tensor(&tensors, "gen.image");
    let (_, want_u8) = read_tensor(&tensors, "gen.image_u8");
    let [c, h, w] = [0, 1, 2].map(|i| latent_shape[i] as usize);
    assert_eq!(c, decoder.latent_channels());
    let [oh, ow] = decoder.output_hw(h, w).unwrap();
    assert_eq!([3, oh as u64, ow as u64], image_shape.as_slice());

    let mut scratch = DecoderScratch::default();
    let image = decoder
        .decode_flow_latent(&latent, h, w, &mut scratch)
        .unwrap();
    let worst = assert_close("gen.image", &image, &want, TOLERANCE);
    println!("base: worst relative error {worst:e}");

    // The memory prediction is what the decode really held (scratch, scaled latent, image).
    let held = (scratch.held_values() + image.len() + latent.len()) as u64 * 4;
    assert_eq!(decoder.predicted_working_bytes(h, w).unwrap(), held);

    // PNG bytes: the reference rounds the same f32 image; a byte may differ only where our value
    // and the reference's straddle a rounding boundary (at most 1, and rarely).
    let rgb = latte::image::to_rgb8(&image, oh, ow).unwrap();
    let mut differ = 0;
    for (&got, &want) in rgb.iter().zip(&want_u8) {
        let d = (got as f32 - want).abs();
        assert!(d <= 1.0, "byte {got} vs {want}");
        differ += (d > 0.0) as usize;
    }
    assert!(
        differ * 100 <= rgb.len(),
        "{differ} of {} bytes differ",
        rgb.len()
    );
    let reference_rgb = latte::image::to_rgb8(&want, oh, ow).unwrap();
    let exact: Vec<u8> = want_u8.iter().map(|&v| v as u8).collect();
    assert_eq!(
        reference_rgb, exact,
        "the byte rule reproduces image_u8 from image"
    );

    // Reusing the scratch gives the same image bit for bit and holds no more memory.
    let again = decoder
        .decode_flow_latent(&latent, h, w, &mut scratch)
        .unwrap();
    assert_eq!(again, image);
    assert_eq!(
        (scratch.held_values() + image.len() + latent.len()) as u64 * 4,
        held
    );
}

#[test]
fn bad_input_is_a_typed_error() {
    use latte::model::dcae::DcaeConfigError;
    use latte::model::ModelError;
    let tmp = tempfile::tempdir().unwrap();
    let ae = root().join("tests/fixtures/reference/base/checkpoint/autoencoder");
    let config = std::fs::read_to_string(ae.join("config.json")).unwrap();
    let load = |name: &str, config: &str, skip: Option<&str>| {
        let out = tmp.path().join(name);
        dcae_gguf_with(&ae, config, &out, false, skip);
        let file = ModelFile::open(&out).unwrap();
        Decoder::load(&file).map(|_| ())
    };
    load("ok.gguf", &config, None).unwrap();

    let err = load("json.gguf", "{\"latent_channels\": 4,", None).unwrap_err();
    assert!(
        matches!(
            &err,
            ModelError::DcaeConfig {
                source: DcaeConfigError::Json(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("latte.dcae.config_json"), "{err}");

    let unknown = config.replace("\"ResBlock\"", "\"ConvNeXtBlock\"");
    let err = load("block.gguf", &unknown, None).unwrap_err();
    match &err {
        ModelError::DcaeConfig {
            source: DcaeConfigError::Unknown { key, value, .. },
            ..
        } => assert_eq!(
            (key.as_str(), value.as_str()),
            ("decoder_block_types", "ConvNeXtBlock")
        ),
        other => panic!("{other}"),
    }

    let err = load(
        "missing.gguf",
        &config,
        Some("dcae.up_blocks.1.1.conv2.weight"),
    )
    .unwrap_err();
    match &err {
        ModelError::MissingTensor { name, .. } => {
            assert_eq!(name, "dcae.up_blocks.1.1.conv2.weight")
        }
        other => panic!("{other}"),
    }

    // A config whose widths do not match the tensors: a shape error naming the tensor.
    let wider = config.replace("\"latent_channels\": 4", "\"latent_channels\": 8");
    let err = load("shape.gguf", &wider, None).unwrap_err();
    assert!(
        matches!(&err, ModelError::TensorShape { name, .. } if name == "dcae.conv_in.weight"),
        "{err}"
    );

    // No config key at all.
    let bare = tmp.path().join("bare.gguf");
    let mut b = latte::gguf::GgufBuilder::new();
    b.push_tensor("x", latte::dtype::TensorType::F32, &[1])
        .unwrap();
    let mut w = b.create(&bare).unwrap();
    w.write_tensor("x", &[0; 4]).unwrap();
    w.finish().unwrap();
    let file = ModelFile::open(&bare).unwrap();
    assert!(matches!(
        Decoder::load(&file),
        Err(ModelError::MissingKey { .. })
    ));

    // Latents of the wrong shape.
    let out = tmp.path().join("ok.gguf");
    let file = ModelFile::open(&out).unwrap();
    let decoder = Decoder::load(&file).unwrap();
    let mut scratch = DecoderScratch::default();
    let latent = vec![0.1f32; 4 * 4 * 4];
    assert!(decoder.decode(&latent, 4, 4, &mut scratch).is_ok());
    for (h, w) in [(4, 5), (2, 4), (0, 16), (16, 0)] {
        let err = decoder.decode(&latent, h, w, &mut scratch).unwrap_err();
        assert!(matches!(err, ModelError::Invalid { .. }), "{h}×{w}: {err}");
    }
    assert!(decoder.decode(&latent[..63], 4, 4, &mut scratch).is_err());
    assert!(decoder.predicted_working_bytes(usize::MAX / 2, 3).is_err());
}
