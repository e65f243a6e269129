//! conv2d (general, pointwise, depthwise, grouped) against the textbook 7-loop definition in f64,
//! and the CPU backend's quantized 1×1 convolution (a quantized matmul over channels) against it
//! on the dequantized kernel.

mod ops_util;

use latte::backend::cpu::isa::Isa;
use latte::backend::cpu::ops::gemm::MicroKernel;
use std::borrow::Cow;

use latte::backend::cpu::ops::{
    conv2d, conv2d_prepared, conv2d_with_isa, conv2d_with_kernel, Conv2d, ConvScratch, OpError,
    PreparedConv,
};
use latte::dtype::TensorType;
use ops_util::{assert_close, data};

/// PyTorch's `F.conv2d` for batch 1, zero padding, literally.
fn reference(
    c: &Conv2d,
    x: &[f32],
    [h, w]: [usize; 2],
    wt: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f64> {
    let [kh, kw] = c.kernel;
    let [sh, sw] = c.stride;
    let [ph, pw] = c.padding;
    let oh = (h + 2 * ph - kh) / sh + 1;
    let ow = (w + 2 * pw - kw) / sw + 1;
    let cin_g = c.in_channels / c.groups;
    let cout_g = c.out_channels / c.groups;
    let mut out = vec![0f64; c.out_channels * oh * ow];
    for oc in 0..c.out_channels {
        let g = oc / cout_g;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias.map_or(0.0, |b| b[oc] as f64);
                for ci in 0..cin_g {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * sh + ky) as isize - ph as isize;
                            let ix = (ox * sw + kx) as isize - pw as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let xin = x[((g * cin_g + ci) * h + iy as usize) * w + ix as usize];
                            let wv = wt[((oc * cin_g + ci) * kh + ky) * kw + kx];
                            acc += xin as f64 * wv as f64;
                        }
                    }
                }
                out[(oc * oh + oy) * ow + ox] = acc;
            }
        }
    }
    out
}

fn check(c: Conv2d, hw: [usize; 2], with_bias: bool, seed: u64) {
    let x = data(c.in_channels * hw[0] * hw[1], seed, -1.0, 1.0);
    let wt = data(c.weight_len().unwrap(), seed + 1, -1.0, 1.0);
    let b = data(c.out_channels, seed + 2, -1.0, 1.0);
    let bias = with_bias.then_some(&b[..]);
    let [oh, ow] = c.output_hw(hw).unwrap();
    let want = reference(&c, &x, hw, &wt, bias);
    // Every kernel family this CPU runs (the portable one forced too), each with a fresh scratch
    // and again with one a larger convolution has already grown.
    for isa in Isa::supported() {
        for mut scratch in [ConvScratch::default(), grown_scratch(isa)] {
            let mut out = vec![f32::NAN; c.out_channels * oh * ow];
            conv2d_with_isa(isa, &c, &x, hw, &wt, bias, &mut out, &mut scratch).unwrap();
            check_output(&c, &out, &want, isa);
        }
    }
    let mut out = vec![f32::NAN; c.out_channels * oh * ow];
    conv2d(&c, &x, hw, &wt, bias, &mut out).unwrap();
    check_output(&c, &out, &want, Isa::detect());
    // The BF16 GEMM (where this CPU has one) against the definition on bf16-rounded operands:
    // products of bf16 values are exact, so the f32 bound above holds. Depthwise convolutions are
    // not GEMMs and stay f32 whatever the kernel.
    let want = if c.is_depthwise() {
        want
    } else {
        reference(&c, &bf16_rounded(&x), hw, &bf16_rounded(&wt), bias)
    };
    for kernel in Isa::supported().filter_map(MicroKernel::bf16_for) {
        for mut scratch in [ConvScratch::default(), grown_scratch(kernel.isa())] {
            let mut out = vec![f32::NAN; c.out_channels * oh * ow];
            conv2d_with_kernel(kernel, &c, &x, hw, &wt, bias, &mut out, &mut scratch).unwrap();
            check_output(&c, &out, &want, kernel.isa());
        }
    }
    check_prepared(c, hw, &x, &wt, bias);
}

/// Weights packed once ([`PreparedConv`], what the backend holds) give the bits of the
/// per-call path on every kernel (the packing is the same, done earlier), and hold the bytes
/// [`PreparedConv::bytes_for`] predicts.
fn check_prepared(c: Conv2d, hw: [usize; 2], x: &[f32], wt: &[f32], bias: Option<&[f32]>) {
    let [oh, ow] = c.output_hw(hw).unwrap();
    let f32_kernels = Isa::supported().filter_map(MicroKernel::for_isa);
    let bf16_kernels = Isa::supported().filter_map(MicroKernel::bf16_for);
    for kernel in f32_kernels.chain(bf16_kernels) {
        let mut want = vec![f32::NAN; c.out_channels * oh * ow];
        let mut scratch = ConvScratch::default();
        conv2d_with_kernel(kernel, &c, x, hw, wt, bias, &mut want, &mut scratch).unwrap();
        let prepared = PreparedConv::new(kernel, &c, Cow::Borrowed(wt)).unwrap();
        for mut scratch in [ConvScratch::default(), grown_scratch(kernel.isa())] {
            let mut out = vec![f32::NAN; c.out_channels * oh * ow];
            conv2d_prepared(&prepared, x, hw, bias, &mut out, &mut scratch).unwrap();
            let same = out
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{c:?} on {:?}: prepared weights differ", kernel.isa());
        }
    }
    for ty in [TensorType::F32, TensorType::F16, TensorType::BF16] {
        let values = if ty == TensorType::F32 {
            Cow::Borrowed(wt)
        } else {
            Cow::Owned(wt.to_vec())
        };
        let prepared = PreparedConv::new(MicroKernel::detect(ty), &c, values).unwrap();
        let predicted = PreparedConv::bytes_for(&c, ty).unwrap();
        assert_eq!(prepared.held_bytes(), predicted, "{c:?} stored as {ty:?}");
    }
}

/// `x` rounded to bf16, nearest even (the `half` crate's rounding), as the BF16 GEMM reads it.
fn bf16_rounded(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect()
}

/// A scratch after a convolution with more channels, pixels and taps than any checked here.
fn grown_scratch(isa: Isa) -> ConvScratch {
    let c = Conv2d::same(30, 13, 3);
    let x = vec![0.5f32; 30 * 20 * 21];
    let w = vec![0.25f32; c.weight_len().unwrap()];
    let mut out = vec![0f32; 13 * 20 * 21];
    let mut scratch = ConvScratch::default();
    conv2d_with_isa(isa, &c, &x, [20, 21], &w, None, &mut out, &mut scratch).unwrap();
    scratch
}

fn check_output(c: &Conv2d, out: &[f32], want: &[f64], isa: Isa) {
    // Each output sums ≤ C_in/G·kh·kw ≤ 270 products of magnitude ≤ 1 in f32: error ≤ 270·eps·270
    // ≈ 4e-3 in the worst case, ~√270·eps·√270 ≈ 2e-6 typically; 2e-5 holds for these sizes, while
    // any wrong tap, channel or padding moves results by ~0.1.
    assert_close(out, want, 2e-5, 0.0, &format!("{isa}: {c:?}"));
}

fn conv(cin: usize, cout: usize, k: [usize; 2], s: [usize; 2], p: [usize; 2], g: usize) -> Conv2d {
    Conv2d {
        in_channels: cin,
        out_channels: cout,
        kernel: k,
        stride: s,
        padding: p,
        groups: g,
    }
}

#[test]
fn general_convolutions() {
    // 5 output channels: one full block of 4 and a partial one.
    check(Conv2d::same(3, 5, 3), [6, 9], true, 1);
    check(conv(3, 4, [3, 3], [2, 2], [1, 1], 1), [7, 8], true, 2);
    check(conv(2, 3, [2, 3], [2, 1], [0, 2], 1), [5, 6], false, 3);
    check(conv(4, 6, [3, 3], [1, 1], [1, 1], 2), [5, 5], true, 4);
    // Kernel larger than the input, reached only through padding.
    check(conv(2, 2, [5, 5], [1, 1], [2, 2], 1), [3, 3], true, 5);
    // Padding wider than the kernel reach: border outputs are bias only.
    check(conv(1, 2, [3, 3], [1, 1], [3, 3], 1), [4, 4], true, 6);
}

#[test]
fn wide_rows_and_borders() {
    // Rows wider than a 16-column micro-panel, with border columns on both sides; 20 output
    // channels are several 6- or 8-row tiles and a ragged one.
    check(Conv2d::same(3, 20, 3), [5, 40], true, 30);
    check(conv(2, 8, [5, 5], [1, 1], [2, 2], 1), [6, 37], true, 31);
    // Non-square kernel, asymmetric padding use, no padding at all.
    check(conv(3, 4, [1, 3], [1, 1], [0, 1], 1), [3, 35], false, 32);
    check(conv(2, 4, [3, 3], [1, 1], [0, 0], 1), [4, 50], true, 33);
    // Groups of 4 and of 2 output channels (one small GEMM per group).
    check(conv(4, 8, [3, 3], [1, 1], [1, 1], 2), [3, 34], true, 34);
    check(conv(6, 6, [3, 3], [1, 1], [1, 1], 3), [3, 34], true, 35);
    // A kernel wider than a micro-panel.
    check(conv(1, 2, [1, 35], [1, 1], [0, 17], 1), [2, 40], true, 37);
    // Stride 2: im2col's strided gather.
    check(conv(2, 4, [3, 3], [2, 2], [1, 1], 1), [5, 40], true, 36);
    // More taps (30·9 = 270) than one 256-deep block and more pixels (420) than one 384-column
    // task, both ragged.
    check(Conv2d::same(30, 7, 3), [20, 21], true, 38);
}

#[test]
fn pointwise_convolutions() {
    // 17·19 = 323 pixels: ragged against every micro-panel width.
    check(Conv2d::same(7, 5, 1), [17, 19], true, 10);
    check(conv(6, 9, [1, 1], [1, 1], [0, 0], 3), [4, 5], true, 11);
    // A 1×1 with stride or padding is not a plain matmul: it must take the general path.
    check(conv(3, 2, [1, 1], [2, 2], [1, 1], 1), [5, 6], true, 12);
}

#[test]
fn depthwise_convolutions() {
    check(conv(5, 5, [5, 5], [1, 1], [2, 2], 5), [7, 6], true, 20);
    check(conv(3, 3, [3, 3], [2, 2], [1, 1], 3), [7, 7], false, 21);
    // Channel multiplier 2 (groups = in, out = 2·in).
    check(conv(3, 6, [3, 3], [1, 1], [1, 1], 3), [4, 5], true, 22);
}

#[test]
fn conv_rejects_bad_input() {
    let c = Conv2d::same(2, 3, 3);
    let x = vec![0f32; 2 * 4 * 4];
    let w = vec![0f32; c.weight_len().unwrap()];
    let mut out = vec![0f32; 3 * 4 * 4];
    assert!(conv2d(&c, &x, [4, 4], &w, None, &mut out).is_ok());
    assert!(matches!(
        conv2d(&c, &x[1..], [4, 4], &w, None, &mut out),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        conv2d(&c, &x, [4, 4], &w[1..], None, &mut out),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        conv2d(&c, &x, [4, 4], &w, Some(&[0.0; 2]), &mut out),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        conv2d(&c, &x, [4, 4], &w, None, &mut out[1..]),
        Err(OpError::Len { .. })
    ));
    let bad_groups = conv(3, 4, [1, 1], [1, 1], [0, 0], 2);
    assert!(matches!(
        bad_groups.weight_len(),
        Err(OpError::Param { .. })
    ));
    let zero_stride = conv(2, 2, [1, 1], [0, 1], [0, 0], 1);
    assert!(matches!(
        zero_stride.output_hw([4, 4]),
        Err(OpError::Param { .. })
    ));
    let too_big = conv(2, 2, [5, 5], [1, 1], [0, 0], 1);
    assert!(matches!(
        too_big.output_hw([4, 4]),
        Err(OpError::Param { .. })
    ));
    // Prepared weights: the weight's length is checked when packing, the call's other lengths
    // on every call.
    let kernel = MicroKernel::detect(TensorType::F32);
    assert!(matches!(
        PreparedConv::new(kernel, &c, Cow::Borrowed(&w[1..])),
        Err(OpError::Len { .. })
    ));
    assert!(PreparedConv::new(kernel, &bad_groups, Cow::Borrowed(&w)).is_err());
    assert_eq!(PreparedConv::bytes_for(&bad_groups, TensorType::F32), None);
    let prepared = PreparedConv::new(kernel, &c, Cow::Borrowed(&w)).unwrap();
    let mut scratch = ConvScratch::default();
    assert!(conv2d_prepared(&prepared, &x, [4, 4], None, &mut out, &mut scratch).is_ok());
    assert!(matches!(
        conv2d_prepared(&prepared, &x[1..], [4, 4], None, &mut out, &mut scratch),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        conv2d_prepared(&prepared, &x, [4, 4], None, &mut out[1..], &mut scratch),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        conv2d_prepared(
            &prepared,
            &x,
            [4, 4],
            Some(&[0.0; 2]),
            &mut out,
            &mut scratch
        ),
        Err(OpError::Len { .. })
    ));
}

/// BF16 weights are held packed as bf16 pairs: half the bytes of f32 (plus panel padding).
#[test]
fn bf16_weights_are_held_in_half_the_bytes() {
    let c = Conv2d::same(64, 32, 3);
    let w = vec![0.5f32; c.weight_len().unwrap()];
    let f32_bytes = 4 * w.len() as u64;
    let held = PreparedConv::bytes_for(&c, TensorType::BF16).unwrap();
    let kernel = MicroKernel::detect(TensorType::BF16);
    if kernel.arithmetic() == latte::backend::cpu::ops::gemm::Arithmetic::Bf16 {
        assert_eq!(held, f32_bytes / 2);
    } else {
        // No BF16 dot products here: packed f32, rows padded to whole micro-panels.
        assert!(
            (f32_bytes..f32_bytes + f32_bytes / 4).contains(&held),
            "{held}"
        );
    }
    let prepared = PreparedConv::new(kernel, &c, Cow::Owned(w)).unwrap();
    assert_eq!(prepared.held_bytes(), held);
}

/// A quantized dense 1×1 kernel stays a view of the file and runs as a channel-major quantized
/// matmul (its activations quantized to the weight type's partner, as every quantized matmul's
/// are). Checked through the backend interface on every instruction set here against the textbook
/// convolution on the dequantized kernel, per output, within what quantizing the activations
/// allows: each activation moves by at most half a partner step, d/2 with d = amax(block)/127,
/// plus the f16 rounding of d times |q| ≤ 127 (2⁻¹¹·amax for Q8_0/Q8_1; Q8_K keeps d in f32):
/// under 0.6·amax/127 in all. Q4_1/Q5_1 also take Q8_1's f16 block sum times the weight block's
/// min (2⁻¹⁰·|min|·Σ|x|), and f32 summation 1e-4·Σ|w·x| (the matmul tests' bound). A wrong
/// orientation, channel or bias misses by orders of magnitude more (the bias is up to ±4).
#[test]
fn quantized_pointwise_convolutions_through_the_backend() {
    use latte::backend::cpu::dot::dot_partner;
    use latte::backend::cpu::{CpuBackend, CpuConvWeight};
    use latte::backend::{Backend, DeviceBuffer};
    use latte::tensor::TensorView;
    let quantized = TensorType::COMPUTABLE.iter().filter(|t| t.is_quantized());
    for (seed, &ty) in (40..).zip(quantized) {
        let partner_block = dot_partner(ty).unwrap().block_size();
        let cin = 2 * ty.block_size().max(32);
        // 24 output channels pack per task (whole groups of 8) where the type packs, 13 never.
        // 40 × 40 pixels: more than 2^16 input values, so the columns are quantized in parallel.
        for (cout, hw, with_bias) in [
            (24, [17, 19], true),
            (13, [5, 3], false),
            (16, [40, 40], true),
        ] {
            let c = Conv2d::same(cin, cout, 1);
            let x = data(cin * hw[0] * hw[1], seed, -1.0, 1.0);
            let values = data(cin * cout, seed + 1, -1.0, 1.0);
            let mut bytes = vec![0u8; ty.row_bytes((cin * cout) as u64).unwrap() as usize];
            latte::quant::quantize(ty, &values, &mut bytes).unwrap();
            let mut wt = vec![0f32; cin * cout];
            latte::quant::dequantize(ty, &bytes, &mut wt).unwrap();
            let b = data(cout, seed + 2, -4.0, 4.0);
            let bias = with_bias.then_some(&b[..]);
            let want = reference(&c, &x, hw, &wt, bias);
            let bound = pointwise_bound(ty, &bytes, &wt, &x, [cin, cout], partner_block);
            let view = TensorView::new("dcae.w", ty, &[cin as u64, cout as u64], &bytes).unwrap();
            for isa in Isa::supported() {
                let backend = CpuBackend::with_isa(isa);
                let what = format!("{ty} {isa} {c:?} on {hw:?}");
                let weight = backend.conv_weight(view, &c).unwrap();
                assert!(
                    matches!(weight, CpuConvWeight::Pointwise(_)),
                    "{what}: not the pointwise path"
                );
                assert_eq!(backend.conv_weight_host_bytes(&c, ty), Some(0), "{what}");
                let mut out = vec![f32::NAN; cout * hw[0] * hw[1]];
                let bias = bias.map(|_| b.all());
                backend
                    .conv2d(&c, &weight, bias, x.all(), hw, out.all_mut())
                    .unwrap();
                for (i, ((&got, &w), &allowed)) in out.iter().zip(&want).zip(&bound).enumerate() {
                    let err = (got as f64 - w).abs();
                    assert!(
                        err <= allowed,
                        "{what}: output {i}: got {got}, want {w} (error {err:e} > {allowed:e})"
                    );
                }
            }
        }
    }
}

/// The per-output bound of [`quantized_pointwise_convolutions_through_the_backend`].
fn pointwise_bound(
    ty: TensorType,
    bytes: &[u8],
    wt: &[f32],
    x: &[f32],
    [cin, cout]: [usize; 2],
    partner_block: usize,
) -> Vec<f64> {
    let pixels = x.len() / cin;
    let offset_min = matches!(ty, TensorType::Q4_1 | TensorType::Q5_1);
    let row_bytes = bytes.len() / cout;
    let mut bound = vec![0f64; cout * pixels];
    for p in 0..pixels {
        let column: Vec<f64> = (0..cin).map(|t| x[t * pixels + p] as f64).collect();
        let step: Vec<f64> = column
            .chunks(partner_block)
            .flat_map(|block| {
                let amax = block.iter().fold(0f64, |m, v| m.max(v.abs()));
                std::iter::repeat_n(0.6 * amax / 127.0, block.len())
            })
            .collect();
        for oc in 0..cout {
            let w = &wt[oc * cin..][..cin];
            let mut b: f64 = (0..cin)
                .map(|t| (w[t] as f64).abs() * step[t] + 1e-4 * (w[t] as f64 * column[t]).abs())
                .sum();
            if offset_min {
                let row = &bytes[oc * row_bytes..][..row_bytes];
                for (block, xs) in row.chunks_exact(ty.block_bytes()).zip(column.chunks(32)) {
                    let min = half::f16::from_le_bytes([block[2], block[3]]).to_f32() as f64;
                    let sum: f64 = xs.iter().map(|v| v.abs()).sum();
                    b += min.abs() * sum * 2f64.powi(-10);
                }
            }
            bound[oc * pixels + p] = b;
        }
    }
    bound
}

/// Bad lengths through the pointwise path are errors naming the operand, never panics; a
/// quantized 1×1 with a stride is no matmul and takes the GEMM path; F16 1×1 kernels too.
#[test]
fn pointwise_path_rejects_bad_input_and_keeps_to_plain_1x1() {
    use latte::backend::cpu::{CpuConvWeight, CPU};
    use latte::backend::{Backend, BackendError, DeviceBuffer};
    use latte::tensor::TensorView;
    let ty = TensorType::Q8_0;
    let c = Conv2d::same(64, 8, 1);
    let values = data(64 * 8, 50, -1.0, 1.0);
    let mut bytes = vec![0u8; ty.row_bytes(64 * 8).unwrap() as usize];
    latte::quant::quantize(ty, &values, &mut bytes).unwrap();
    let view = TensorView::new("dcae.w", ty, &[64, 8], &bytes).unwrap();
    let weight = CPU.conv_weight(view, &c).unwrap();
    assert!(matches!(weight, CpuConvWeight::Pointwise(_)));
    let x = data(64 * 4 * 4, 51, -1.0, 1.0);
    let b = [0f32; 8];
    let mut out = vec![0f32; 8 * 4 * 4];
    assert!(CPU
        .conv2d(&c, &weight, None, x.all(), [4, 4], out.all_mut())
        .is_ok());
    let short = x[1..].to_vec();
    let short_bias = b[1..].to_vec();
    let mut long_out = vec![0f32; 8 * 4 * 4 + 1];
    let other = Conv2d::same(64, 4, 1);
    let results = [
        (
            "input",
            CPU.conv2d(&c, &weight, None, short.all(), [4, 4], out.all_mut()),
        ),
        (
            "out",
            CPU.conv2d(&c, &weight, None, x.all(), [4, 4], long_out.all_mut()),
        ),
        (
            "bias",
            CPU.conv2d(
                &c,
                &weight,
                Some(short_bias.all()),
                x.all(),
                [4, 4],
                out.all_mut(),
            ),
        ),
        (
            "weights prepared for",
            CPU.conv2d(&other, &weight, None, x.all(), [4, 4], out.all_mut()),
        ),
    ];
    for (what, result) in results {
        let err = result.expect_err(what);
        assert!(matches!(err, BackendError::Op(_)), "{what}: {err:?}");
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
    let strided = conv(64, 8, [1, 1], [2, 2], [0, 0], 1);
    let weight = CPU.conv_weight(view, &strided).unwrap();
    assert!(matches!(weight, CpuConvWeight::Gemm(_)));
    let f16_bytes: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let f16_view = TensorView::new("dcae.w16", TensorType::F16, &[64, 8], &f16_bytes).unwrap();
    let weight = CPU.conv_weight(f16_view, &c).unwrap();
    assert!(matches!(weight, CpuConvWeight::Gemm(_)));
}
