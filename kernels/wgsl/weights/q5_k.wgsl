// Q5_K, as stored (44 words per super-block of 256): (d, dmin), 3 words of scales, 8 words of
// high bits (byte l, bit 2c + high for weight l of chunk c's half), 32 words of nibbles.
// w = d·sc·(q + 16·h) − dmin·m.
fn weight4(row: u32, k: u32) -> vec4<f32> {
    let base = p.w_off + (row * p.row_blocks + k / 256u) * 44u;
    let e = k % 256u;
    let chunk = e / 64u;
    let high = (e % 64u) / 32u;
    let l = e % 32u;
    let dm = halves(w[base]);
    let sm = k_scale_min(base, 2u * chunk + high);
    let q = nibbles(w[base + 12u + (32u * chunk + l) / 4u], 4u * high);
    let hbits = (vec4<u32>(w[base + 4u + l / 4u]) >> (vec4<u32>(0u, 8u, 16u, 24u) + (2u * chunk + high))) & vec4<u32>(1u);
    return (dm.x * sm.x) * (q + 16.0 * vec4<f32>(hbits)) - vec4<f32>(dm.y * sm.y);
}
fn weight1(row: u32, k: u32) -> f32 {
    return weight4(row, k & ~3u)[k & 3u];
}
