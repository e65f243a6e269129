// Normalisations in place.
//   rms_norm:          rows of `dim`: x / sqrt(mean(x²) + eps) · w          (one workgroup per row)
//   layer_norm:        rows of `dim`: (x − mean) / sqrt(var + eps) (· w) (+ b), biased variance
//   rms_norm_channels: a [C, P] image, per pixel across channels: x · inv · w[c] (+ b[c])
//   batch_norm:        a [C, P] image: ((x − mean[c]) · inv_std[c]) · w[c] + b[c], one invocation
//                      per value (`rows` = channels, `dim` = pixels)
// `flags` bit 0: w present, bit 1: b present. `m`/`s` are batch norm's mean and inv_std.

struct Params {
    rows: u32,
    dim: u32,
    x_off: u32,
    w_off: u32,
    b_off: u32,
    flags: u32,
    eps: f32,
    m_off: u32,
    s_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> m: array<f32>;
@group(0) @binding(5) var<storage, read> s: array<f32>;

var<workgroup> partial: array<f32, 256>;

// The sum of every invocation's `v` (all 256 must call it).
fn workgroup_sum(v: f32, l: u32) -> f32 {
    partial[l] = v;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
        if l < stride {
            partial[l] = partial[l] + partial[l + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn rms_norm(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let row = flat_group(g, ng);
    if row >= p.rows { return; }
    let base = p.x_off + row * p.dim;
    var acc = 0.0;
    for (var j = l; j < p.dim; j += 256u) {
        let v = x[base + j];
        acc += v * v;
    }
    let mean_sq = workgroup_sum(acc, l) / f32(p.dim);
    let inv = 1.0 / sqrt(mean_sq + p.eps);
    for (var j = l; j < p.dim; j += 256u) {
        x[base + j] = x[base + j] * inv * w[p.w_off + j];
    }
}

@compute @workgroup_size(256)
fn layer_norm(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let row = flat_group(g, ng);
    if row >= p.rows { return; }
    let base = p.x_off + row * p.dim;
    var acc = 0.0;
    for (var j = l; j < p.dim; j += 256u) {
        acc += x[base + j];
    }
    let mean = workgroup_sum(acc, l) / f32(p.dim);
    var dev = 0.0;
    for (var j = l; j < p.dim; j += 256u) {
        let d = x[base + j] - mean;
        dev += d * d;
    }
    let variance = workgroup_sum(dev, l) / f32(p.dim);
    let inv = 1.0 / sqrt(variance + p.eps);
    for (var j = l; j < p.dim; j += 256u) {
        var v = (x[base + j] - mean) * inv;
        if (p.flags & 1u) != 0u { v = v * w[p.w_off + j]; }
        if (p.flags & 2u) != 0u { v = v + b[p.b_off + j]; }
        x[base + j] = v;
    }
}

// One invocation per pixel; `rows` = channels, `dim` = pixels.
@compute @workgroup_size(256)
fn rms_norm_channels(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let pixel = flat_id(g, ng, l, 256u);
    if pixel >= p.dim { return; }
    var acc = 0.0;
    for (var c = 0u; c < p.rows; c++) {
        let v = x[p.x_off + c * p.dim + pixel];
        acc += v * v;
    }
    let inv = 1.0 / sqrt(acc / f32(p.rows) + p.eps);
    for (var c = 0u; c < p.rows; c++) {
        let at = p.x_off + c * p.dim + pixel;
        var bias = 0.0;
        if (p.flags & 2u) != 0u { bias = b[p.b_off + c]; }
        x[at] = x[at] * inv * w[p.w_off + c] + bias;
    }
}

@compute @workgroup_size(256)
fn batch_norm(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = flat_id(g, ng, l, 256u);
    if i >= p.rows * p.dim { return; }
    let c = i / p.dim;
    let v = (x[p.x_off + i] - m[p.m_off + c]) * s[p.s_off + c];
    x[p.x_off + i] = v * w[p.w_off + c] + b[p.b_off + c];
}
