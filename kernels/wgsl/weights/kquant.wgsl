// Byte `i` of the 12 packed 6-bit scales and mins of a Q4_K / Q5_K super-block at word `base + 1`.
fn k_scale_byte(base: u32, i: u32) -> u32 {
    return (w[base + 1u + i / 4u] >> (8u * (i % 4u))) & 0xffu;
}
// ggml's get_scale_min_k4: sub-block j's 6-bit scale and min.
fn k_scale_min(base: u32, j: u32) -> vec2<f32> {
    if j < 4u {
        return vec2<f32>(f32(k_scale_byte(base, j) & 63u), f32(k_scale_byte(base, j + 4u) & 63u));
    }
    let sc = (k_scale_byte(base, j + 4u) & 15u) | ((k_scale_byte(base, j - 4u) >> 6u) << 4u);
    let m = (k_scale_byte(base, j + 4u) >> 4u) | ((k_scale_byte(base, j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}
