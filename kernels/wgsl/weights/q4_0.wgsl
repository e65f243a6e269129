// Q4_0, repacked: 4 words of nibbles per block of 32 (low nibbles are weights 0..16, high ones
// 16..32), then the f16 scales. w = (q − 8)·d.
fn weight4(row: u32, k: u32) -> vec4<f32> {
    let block = row * p.row_blocks + k / 32u;
    let j = k % 32u;
    let word = w[p.w_off + block * 4u + (j % 16u) / 4u];
    let q = nibbles(word, select(0u, 4u, j >= 16u));
    return (q - vec4<f32>(8.0)) * block_scale(block);
}
fn weight1(row: u32, k: u32) -> f32 {
    return weight4(row, k & ~3u)[k & 3u];
}
