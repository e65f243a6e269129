// Eval-mode batch norm of a [C, P] image in place: ((x − mean[c]) · inv_std[c]) · w[c] + b[c].
// `rows` = channels, `dim` = pixels (the parameter block of norm.wgsl).

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

@compute @workgroup_size(256)
fn batch_norm(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = flat_id(g, ng, l, 256u);
    if i >= p.rows * p.dim { return; }
    let c = i / p.dim;
    let v = (x[p.x_off + i] - m[p.m_off + c]) * s[p.s_off + c];
    x[p.x_off + i] = v * w[p.w_off + c] + b[p.b_off + c];
}
