// Q4_K, as stored (36 words per super-block of 256): (d, dmin), 3 words of scales, 32 words of
// nibbles; chunk c of 64 weights uses bytes 32c.. (low nibbles: sub-block 2c, high: 2c + 1).
// w = d·sc·q − dmin·m.
fn weight4(row: u32, k: u32) -> vec4<f32> {
    let base = p.w_off + (row * p.row_blocks + k / 256u) * 36u;
    let e = k % 256u;
    let chunk = e / 64u;
    let high = (e % 64u) / 32u;
    let l = e % 32u;
    let dm = halves(w[base]);
    let sm = k_scale_min(base, 2u * chunk + high);
    let q = nibbles(w[base + 4u + (32u * chunk + l) / 4u], 4u * high);
    return (dm.x * sm.x) * q - vec4<f32>(dm.y * sm.y);
}
fn weight1(row: u32, k: u32) -> f32 {
    return weight4(row, k & ~3u)[k & 3u];
}
