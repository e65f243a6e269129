// F32 weights: K floats per row.
fn weight1(row: u32, k: u32) -> f32 {
    return bitcast<f32>(w[p.w_off + row * p.k + k]);
}
fn weight4(row: u32, k: u32) -> vec4<f32> {
    let base = p.w_off + row * p.k + k;
    return vec4<f32>(bitcast<f32>(w[base]), bitcast<f32>(w[base + 1u]), bitcast<f32>(w[base + 2u]), bitcast<f32>(w[base + 3u]));
}
