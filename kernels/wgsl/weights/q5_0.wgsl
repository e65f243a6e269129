// Q5_0, repacked: per block of 32 a word of high bits then 4 words of nibbles, then the f16
// scales. w = (q − 16)·d.
fn weight4(row: u32, k: u32) -> vec4<f32> {
    let block = row * p.row_blocks + k / 32u;
    let j = k % 32u;
    let base = p.w_off + block * 5u;
    let word = w[base + 1u + (j % 16u) / 4u];
    let q = nibbles(word, select(0u, 4u, j >= 16u)) + 16.0 * bits4(w[base], j);
    return (q - vec4<f32>(16.0)) * block_scale(block);
}
fn weight1(row: u32, k: u32) -> f32 {
    return weight4(row, k & ~3u)[k & 3u];
}
