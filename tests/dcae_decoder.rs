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
use latte::backend::cpu::CpuBackend;
use latte::convert::quantize::QuantizeOptions;
use latte::convert::Checkpoint;
use latte::model::dcae::{Decoder, DecoderScratch};
use latte::model::ModelFile;

const TOLERANCE: f32 = 1e-4;

fn base_gguf(dir: &std::path::Path) -> std::path::PathBuf {
    base_gguf_as(dir, "f32")
}

/// The base fixture converted with every tensor stored as `ty`.
fn base_gguf_as(dir: &std::path::Path, ty: &str) -> std::path::PathBuf {
    let options = QuantizeOptions::parse(ty, &[]).unwrap();
    let out = dir.join(format!("base-{ty}.gguf"));
    let checkpoint = root().join("tests/fixtures/reference/base/checkpoint");
    Checkpoint::plan(&checkpoint, &options)
        .unwrap()
        .write(&out, &mut |_| {})
        .unwrap();
    out
}

/// What a decode holds at its peak: the decoder's buffers, this thread's CPU working memory, and the
/// scaled latent and the image (`io` values).
fn held_bytes(scratch: &DecoderScratch, io: usize) -> u64 {
    (scratch.held_values() + CpuBackend::held_scratch_values() + io) as u64 * 4
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
    let held = held_bytes(&scratch, image.len() + latent.len());
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
    assert_eq!(held_bytes(&scratch, image.len() + latent.len()), held);
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
        dcae_gguf_with(&ae, config, &out, Storage::F32, skip);
        let file = ModelFile::open(&out).unwrap();
        Decoder::load(&file).map(|_| ())
    };
    load("ok.gguf", &config, None).unwrap();

    let err = load("json.gguf", "{\"latent_channels\": 4,", None).unwrap_err();
    assert!(
        matches!(
            &err,
            ModelError::DcaeConfig {
                cause: DcaeConfigError::Json(_),
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
            cause: DcaeConfigError::Unknown { key, value, .. },
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

/// Every `tests/fixtures/dcae/` configuration: each latent decodes to diffusers' image.
#[test]
fn dcae_fixtures_decode_as_diffusers() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = root().join("tests/fixtures/dcae");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("manifest.json")).unwrap())
            .unwrap();
    let names: Vec<&String> = manifest.as_object().unwrap().keys().collect();
    assert_eq!(names, ["batchnorm_acts", "interpolate_out", "vit_shuffle"]);
    for name in names {
        let dir = fixtures.join(name);
        let out = tmp.path().join(format!("{name}.gguf"));
        dcae_gguf(&dir.join("autoencoder"), &out, Storage::F32);
        let file = ModelFile::open(&out).unwrap();
        let decoder = Decoder::load(&file).unwrap();
        let tensors = dir.join("tensors.safetensors");
        let mut scratch = DecoderScratch::default();
        // This thread's CPU working memory starts empty for each decoder, as its buffers do.
        CpuBackend::release_scratch();
        let pairs = manifest[name]["tensors"].as_object().unwrap().len() / 2;
        assert!(pairs >= 1);
        for i in 0..pairs {
            let (shape, latent) = read_tensor(&tensors, &format!("latent.{i}"));
            let (image_shape, want) = read_tensor(&tensors, &format!("image.{i}"));
            let [h, w] = [shape[1] as usize, shape[2] as usize];
            let [oh, ow] = decoder.output_hw(h, w).unwrap();
            assert_eq!(
                [3, oh as u64, ow as u64],
                image_shape.as_slice(),
                "{name}.{i}"
            );
            let image = decoder.decode(&latent, h, w, &mut scratch).unwrap();
            let worst = assert_close(&format!("{name} image.{i}"), &image, &want, TOLERANCE);
            println!("{name} image.{i} ({h}×{w} latent): worst relative error {worst:e}");
        }
        // After decoding every size, the scratch holds what the prediction says for the largest.
        let predicted = (0..pairs)
            .map(|i| {
                let (shape, latent) = read_tensor(&tensors, &format!("latent.{i}"));
                let (h, w) = (shape[1] as usize, shape[2] as usize);
                let image = 3 * decoder.output_hw(h, w).unwrap().iter().product::<usize>();
                decoder.predicted_working_bytes(h, w).unwrap() / 4 - (image + latent.len()) as u64
            })
            .max()
            .unwrap();
        let held = (scratch.held_values() + CpuBackend::held_scratch_values()) as u64;
        if pairs == 1 {
            assert_eq!(held, predicted, "{name}");
        } else {
            assert!(held >= predicted, "{name}");
        }
    }
}

/// Weights stored as BF16 compute with BF16 dot products where the CPU has them (AVX-512 BF16:
/// activations rounded to bf16 as they are packed, products exact, f32 sums), f32 elsewhere.
/// Against diffusers' f32 image, which used the unrounded weights: a weight or activation
/// rounded to bf16 is off by up to 2⁻⁹ relative, and over ~10 layers the image moves by a few
/// 1e-3 of its largest magnitude (measured on an AMD EPYC: 3.9e-3 from the weights' rounding
/// alone with the f32 kernels, 7.1e-3 with the BF16 kernels; `cargo test -- --nocapture` prints
/// it). 2e-2 leaves margin for other CPUs' summation orders, while a wrong pair order or a dropped
/// depth step moves it by ~1 (the kernel tests in `ops_gemm` bound the arithmetic itself at
/// ~1e-4). The working memory is what the plan predicts for this weight type, exactly (the BF16
/// kernel packs half the words of a wider tile).
#[test]
fn bf16_weights_decode_close_to_the_reference_and_as_planned() {
    let tmp = tempfile::tempdir().unwrap();
    let file = ModelFile::open(base_gguf_as(tmp.path(), "bf16")).unwrap();
    let decoder = Decoder::load(&file).unwrap();
    let tensors = root().join("tests/fixtures/reference/base/tensors.safetensors");
    let (latent_shape, latent) = read_tensor(&tensors, "gen.final_latent");
    let (_, want) = read_tensor(&tensors, "gen.image");
    let [h, w] = [1, 2].map(|i| latent_shape[i] as usize);
    let mut scratch = DecoderScratch::default();
    let image = decoder
        .decode_flow_latent(&latent, h, w, &mut scratch)
        .unwrap();
    let worst = assert_close("gen.image (bf16)", &image, &want, 2e-2);
    println!("base, bf16 weights: worst relative error {worst:e}");
    let held = held_bytes(&scratch, image.len() + latent.len());
    assert_eq!(decoder.predicted_working_bytes(h, w).unwrap(), held);
}

/// Weights stored as F16 are dequantized at load (the owned path) and give exactly what the same
/// values stored as F32 (borrowed from the map) give.
#[test]
fn f16_weights_decode_like_their_f32_values() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = root().join("tests/fixtures/dcae/vit_shuffle");
    let tensors = dir.join("tensors.safetensors");
    let (shape, latent) = read_tensor(&tensors, "latent.0");
    let [h, w] = [shape[1] as usize, shape[2] as usize];
    let mut images = Vec::new();
    for storage in [Storage::F16, Storage::F32RoundedToF16] {
        let out = tmp.path().join("m.gguf");
        dcae_gguf(&dir.join("autoencoder"), &out, storage);
        let file = ModelFile::open(&out).unwrap();
        let decoder = Decoder::load(&file).unwrap();
        images.push(
            decoder
                .decode(&latent, h, w, &mut DecoderScratch::default())
                .unwrap(),
        );
    }
    assert_eq!(images[0], images[1]);
}

/// `latte convert --synthetic`'s decoder carries its config and runs: the tiny variant decodes (a
/// 2×2 latent, the cheapest that passes every stage) to finite values of the right size; the
/// full-size plan's config describes its tensors.
#[test]
fn synthetic_models_decoders_load_and_decode() {
    use latte::convert::synthetic::SyntheticModel;
    use latte::model::dcae::DcaeConfig;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tiny.gguf");
    let options = QuantizeOptions::parse("q8_0", &[]).unwrap();
    SyntheticModel::plan("latte-flow-tiny", &options, 3)
        .unwrap()
        .write(&path, &mut |_| {})
        .unwrap();
    let file = ModelFile::open(&path).unwrap();
    let decoder = Decoder::load(&file).unwrap();
    assert_eq!(decoder.latent_channels(), 32);
    assert_eq!(decoder.output_hw(8, 8).unwrap(), [256, 256]);
    let latent: Vec<f32> = (0..32 * 4)
        .map(|i| ((i * 7) % 13) as f32 / 6.0 - 1.0)
        .collect();
    let image = decoder
        .decode_flow_latent(&latent, 2, 2, &mut DecoderScratch::default())
        .unwrap();
    assert_eq!(image.len(), 3 * 64 * 64);
    assert!(image.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
    assert!(image.iter().any(|&v| v != image[0]));

    let big = SyntheticModel::plan("latte-flow-2b", &options, 0).unwrap();
    let json = big
        .metadata
        .iter()
        .find(|(k, _)| k == "latte.dcae.config_json")
        .and_then(|(_, v)| v.as_str())
        .unwrap();
    let config = DcaeConfig::from_json(json).unwrap();
    let widths: Vec<usize> = config.stages.iter().map(|s| s.channels).collect();
    assert_eq!(widths, [128, 256, 512, 512, 1024, 1024]);
    let conv_in = big
        .tensors
        .iter()
        .find(|t| t.plan.name == "dcae.conv_in.weight")
        .unwrap();
    assert_eq!(conv_in.dims, [3, 3, 32, 1024]);
}
