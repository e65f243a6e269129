// DC-AE's ReLU linear attention (see the CPU op's docs), per head h of qkv [heads, 3, d, n]:
//   linear_attention_kv:  kv[h, i, j] = Σ_p v[i, p] · relu(k[j, p]) for i < d, and
//                         kv[h, d, j] = Σ_p relu(k[j, p]) (the padded row of ones);
//                         one workgroup per (j, i, h), reducing over the pixels
//   linear_attention_out: out[h, i, p] = Σ_j kv[h, i, j] relu(q[j, p]) / (Σ_j kv[h, d, j] relu(q[j, p]) + eps)

struct Params {
    heads: u32,
    d: u32,
    n: u32,
    qkv_off: u32,
    out_off: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> kv: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 256>;

fn plane(h: u32, part: u32, row: u32) -> u32 {
    return p.qkv_off + ((h * 3u + part) * p.d + row) * p.n;
}

@compute @workgroup_size(256)
fn linear_attention_kv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let j = wg.x;
    let i = wg.y; // d means the row of ones
    let h = wg.z;
    let key = plane(h, 1u, j);
    let value = plane(h, 2u, min(i, p.d - 1u));
    var acc = 0.0;
    for (var q = l; q < p.n; q += 256u) {
        let kr = max(qkv[key + q], 0.0);
        if i < p.d {
            acc += qkv[value + q] * kr;
        } else {
            acc += kr;
        }
    }
    partial[l] = acc;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
        if l < stride { partial[l] = partial[l] + partial[l + stride]; }
        workgroupBarrier();
    }
    if l == 0u {
        kv[(h * (p.d + 1u) + i) * p.d + j] = partial[0];
    }
}

@compute @workgroup_size(256)
fn linear_attention_out(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let q = wg.x * 256u + l;
    let i = wg.y;
    let h = wg.z;
    if q >= p.n { return; }
    let kv_row = (h * (p.d + 1u) + i) * p.d;
    let ones = (h * (p.d + 1u) + p.d) * p.d;
    var num = 0.0;
    var den = 0.0;
    for (var j = 0u; j < p.d; j++) {
        let qr = max(qkv[plane(h, 0u, j) + q], 0.0);
        num += kv[kv_row + j] * qr;
        den += kv[ones + j] * qr;
    }
    out[p.out_off + (h * p.d + i) * p.n + q] = num / (den + p.eps);
}
