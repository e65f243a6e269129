// Pass 1 of attention.wgsl: one workgroup per (query row, head, 64 keys); the query row is read
// once into workgroup memory (head_dim ≤ 256).

@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read_write> s: array<f32>;

var<workgroup> q_row: array<f32, 256>;

@compute @workgroup_size(64)
fn attention_scores(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let r = wg.y;
    let h = wg.z;
    let i = p.i0 + r;
    let q_base = p.q_off + (i * p.heads + h) * p.d;
    for (var t = l; t < p.d; t += 64u) {
        q_row[t] = q[q_base + t];
    }
    workgroupBarrier();
    let j = wg.x * 64u + l;
    if j >= visible(i) { return; }
    let k_base = p.k_off + kv_at(j, h);
    var acc = 0.0;
    for (var t = 0u; t < p.d; t++) {
        acc += q_row[t] * k[k_base + t];
    }
    s[(h * p.rows + r) * p.n_kv + j] = p.scale * acc;
}
