// Q8_0, repacked: 8 words of signed bytes per block of 32, then the f16 scales.
fn weight4(row: u32, k: u32) -> vec4<f32> {
    let block = row * p.row_blocks + k / 32u;
    let word = w[p.w_off + block * 8u + (k % 32u) / 4u];
    return signed_bytes(word) * block_scale(block);
}
fn weight1(row: u32, k: u32) -> f32 {
    return weight4(row, k & ~3u)[k & 3u];
}
