// F16 weights: K halves per row, two per word (low half first).
fn weight1(row: u32, k: u32) -> f32 {
    let i = row * p.k + k;
    return halves(w[p.w_off + (i >> 1u)])[i & 1u];
}
fn weight4(row: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(weight1(row, k), weight1(row, k + 1u), weight1(row, k + 2u), weight1(row, k + 3u));
}
