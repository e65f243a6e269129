//! Nearest upsampling and pixel (un)shuffle against PyTorch's definitions written as explicit
//! reshape/permute index maps.

mod ops_util;

use latte::backend::cpu::ops::{
    pixel_shuffle, pixel_unshuffle, repeat_channels, upsample_nearest, OpError,
};
use ops_util::data;

#[test]
fn pixel_shuffle_matches_torch_reshape_permute() {
    // torch: x.view(C, r, r, H, W).permute(0, 3, 1, 4, 2).reshape(C, H·r, W·r).
    let (c, r, h, w) = (2, 3, 2, 4);
    let x = data(c * r * r * h * w, 1, -1.0, 1.0);
    let mut got = vec![0f32; x.len()];
    pixel_shuffle(&x, c * r * r, [h, w], r, &mut got).unwrap();
    // Walk the permuted order (c, h, i, w, j) and read the source at (c, i, j, h, w).
    let mut want = Vec::new();
    for cc in 0..c {
        for y in 0..h {
            for i in 0..r {
                for xx in 0..w {
                    for j in 0..r {
                        want.push(x[(((cc * r + i) * r + j) * h + y) * w + xx]);
                    }
                }
            }
        }
    }
    assert_eq!(got, want);

    // Unshuffle is the exact inverse: torch x.view(C, H/r, r, W/r, r).permute(0, 2, 4, 1, 3).
    let mut back = vec![0f32; x.len()];
    pixel_unshuffle(&got, c, [h * r, w * r], r, &mut back).unwrap();
    assert_eq!(back, x);
}

#[test]
fn pixel_unshuffle_matches_torch_reshape_permute() {
    let (c, r, h, w) = (3, 2, 4, 6);
    let x = data(c * h * w, 2, -1.0, 1.0);
    let mut got = vec![0f32; x.len()];
    pixel_unshuffle(&x, c, [h, w], r, &mut got).unwrap();
    // Permuted order (c, i, j, y, x) reads the source at (c, y, i, x, j) of the [C, H/r, r, W/r, r] view.
    let mut want = Vec::new();
    for cc in 0..c {
        for i in 0..r {
            for j in 0..r {
                for y in 0..h / r {
                    for xx in 0..w / r {
                        want.push(x[(cc * h + y * r + i) * w + xx * r + j]);
                    }
                }
            }
        }
    }
    assert_eq!(got, want);
}

#[test]
fn upsample_nearest_repeats_pixels() {
    for r in [1, 2, 3] {
        let (c, h, w) = (2, 3, 5);
        let x = data(c * h * w, 3, -1.0, 1.0);
        let mut got = vec![f32::NAN; c * h * r * w * r];
        upsample_nearest(&x, c, [h, w], r, &mut got).unwrap();
        for cc in 0..c {
            for y in 0..h * r {
                for xx in 0..w * r {
                    assert_eq!(
                        got[(cc * h * r + y) * w * r + xx],
                        x[(cc * h + y / r) * w + xx / r]
                    );
                }
            }
        }
    }
}

#[test]
fn repeat_channels_matches_repeat_interleave() {
    let (c, r, h, w) = (3, 2, 2, 3);
    let x = data(c * h * w, 4, -1.0, 1.0);
    let mut got = vec![f32::NAN; c * r * h * w];
    repeat_channels(&x, c, [h, w], r, &mut got).unwrap();
    // torch.repeat_interleave(x, r, dim=1): output channel j is input channel j / r.
    for j in 0..c * r {
        assert_eq!(&got[j * h * w..][..h * w], &x[(j / r) * h * w..][..h * w]);
    }
    assert!(matches!(
        repeat_channels(&x, c, [h, w], r, &mut got[1..]),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        repeat_channels(&x, c, [h, w], 0, &mut got),
        Err(OpError::Param { .. })
    ));
}

#[test]
fn resample_rejects_bad_shapes() {
    let x = vec![0f32; 8 * 2 * 2];
    let mut out = vec![0f32; x.len()];
    assert!(matches!(
        pixel_shuffle(&x, 6, [2, 2], 2, &mut out),
        Err(OpError::Param { .. })
    ));
    assert!(matches!(
        pixel_shuffle(&x, 4, [2, 2], 2, &mut out),
        Err(OpError::Len { .. })
    ));
    assert!(matches!(
        pixel_shuffle(&x, 8, [2, 2], 0, &mut out),
        Err(OpError::Param { .. })
    ));
    assert!(matches!(
        pixel_shuffle(&x, 8, [2, 2], 3, &mut out),
        Err(OpError::Param { .. })
    ));
    assert!(matches!(
        pixel_unshuffle(&x, 8, [2, 2], 3, &mut out),
        Err(OpError::Param { .. })
    ));
    assert!(matches!(
        pixel_unshuffle(&x, 8, [2, 2], 2, &mut out[1..]),
        Err(OpError::Len { .. })
    ));
    let mut big = vec![0f32; x.len() * 4];
    assert!(upsample_nearest(&x, 8, [2, 2], 2, &mut big).is_ok());
    assert!(matches!(
        upsample_nearest(&x, 8, [2, 2], 2, &mut out),
        Err(OpError::Len { .. })
    ));
}
