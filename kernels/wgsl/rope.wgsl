// NEOX rotary in place: x is [tokens, heads, 2·half]; the table holds cos then sin, each
// [tokens, half]. Pair (i, i + half) of a head rotates by the angle of frequency i:
//   lo = a·cos − b·sin,  hi = b·cos + a·sin.
// One invocation per (token, head, i).

struct Params {
    tokens: u32,
    heads: u32,
    half: u32,
    x_off: u32,
    sin_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;

@compute @workgroup_size(256)
fn rope_neox(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let id = flat_id(g, ng, l, 256u);
    if id >= p.tokens * p.heads * p.half { return; }
    let i = id % p.half;
    let token = id / (p.half * p.heads);
    let lo = p.x_off + (id / p.half) * 2u * p.half + i;
    let hi = lo + p.half;
    let c = table[token * p.half + i];
    let s = table[p.sin_off + token * p.half + i];
    let a = x[lo];
    let b = x[hi];
    x[lo] = a * c - b * s;
    x[hi] = b * c + a * s;
}
