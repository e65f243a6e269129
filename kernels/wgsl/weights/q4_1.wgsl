// Q4_1, as stored: per block of 32 a word (d, m), then 4 words of nibbles. w = q·d + m.
fn weight4(row: u32, k: u32) -> vec4<f32> {
    let block = row * p.row_blocks + k / 32u;
    let j = k % 32u;
    let base = p.w_off + block * 5u;
    let dm = halves(w[base]);
    let q = nibbles(w[base + 1u + (j % 16u) / 4u], select(0u, 4u, j >= 16u));
    return q * dm.x + vec4<f32>(dm.y);
}
fn weight1(row: u32, k: u32) -> f32 {
    return weight4(row, k & ~3u)[k & 3u];
}
