// The f16 scale of block `i` from the scale region after the quants (two per word).
fn block_scale(i: u32) -> f32 {
    return halves(w[p.w_off + p.scale_off + (i >> 1u)])[i & 1u];
}
// Four signed bytes of a word, lowest first.
fn signed_bytes(word: u32) -> vec4<f32> {
    let shifted = vec4<u32>(word) << vec4<u32>(24u, 16u, 8u, 0u);
    return vec4<f32>(bitcast<vec4<i32>>(shifted) >> vec4<u32>(24u));
}
// Four 4-bit values of a word starting at bit `shift` of each byte.
fn nibbles(word: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(word) >> (vec4<u32>(0u, 8u, 16u, 24u) + shift)) & vec4<u32>(15u));
}
// Four bits of `bits` from bit `at`, each as 0 or 1.
fn bits4(bits: u32, at: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(bits) >> (vec4<u32>(0u, 1u, 2u, 3u) + at)) & vec4<u32>(1u));
}
