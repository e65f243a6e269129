// BF16 weights: K bf16 values per row, two per word (low half first).
fn weight1(row: u32, k: u32) -> f32 {
    let i = row * p.k + k;
    let word = w[p.w_off + (i >> 1u)];
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
}
fn weight4(row: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(weight1(row, k), weight1(row, k + 1u), weight1(row, k + 2u), weight1(row, k + 3u));
}
