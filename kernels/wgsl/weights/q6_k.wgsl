// Q6_K, repacked: per super-block of 256, 52 words (ql[128], qh[64], scales[16] as signed bytes),
// then the f16 d of each super-block. Within each half of 128: quarter r of 32 weights takes ql
// byte l (+32 for odd r), its low (r < 2) or high nibble, and qh byte l's bits 2r..2r+1.
// w = d·sc·(q − 32), one scale per 16 weights.
fn weight4(row: u32, k: u32) -> vec4<f32> {
    let block = row * p.row_blocks + k / 256u;
    let base = p.w_off + block * 52u;
    let e = k % 256u;
    let half = e / 128u;
    let quarter = (e % 128u) / 32u;
    let l = e % 32u;
    let ql = w[base + (half * 64u + l + 32u * (quarter % 2u)) / 4u];
    let qh = w[base + 32u + (half * 32u + l) / 4u];
    let lo = (vec4<u32>(ql) >> (vec4<u32>(0u, 8u, 16u, 24u) + 4u * (quarter / 2u))) & vec4<u32>(15u);
    let hi = (vec4<u32>(qh) >> (vec4<u32>(0u, 8u, 16u, 24u) + 2u * quarter)) & vec4<u32>(3u);
    let q = vec4<f32>(lo | (hi << vec4<u32>(4u))) - vec4<f32>(32.0);
    let s = half * 8u + l / 16u + 2u * quarter;
    let sc = f32(bitcast<i32>(((w[base + 48u + s / 4u] >> (8u * (s % 4u))) & 0xffu) << 24u) >> 24u);
    return (block_scale(block) * sc) * q;
}
fn weight1(row: u32, k: u32) -> f32 {
    return weight4(row, k & ~3u)[k & 3u];
}
