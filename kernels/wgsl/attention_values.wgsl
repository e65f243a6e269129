// Pass 3 of attention.wgsl: one invocation per (t of head_dim, query row, head).

@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn attention_values(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let t = wg.x * 64u + l;
    let r = wg.y;
    let h = wg.z;
    if t >= p.d { return; }
    let i = p.i0 + r;
    let row = (h * p.rows + r) * p.n_kv;
    var acc = 0.0;
    for (var j = 0u; j < visible(i); j++) {
        acc += s[row + j] * v[p.v_off + kv_at(j, h) + t];
    }
    out[p.out_off + (i * p.heads + h) * p.d + t] = acc;
}
