// Element-wise operations in place on `x[x_off .. x_off + n]`, one invocation per value:
//   unary_*:        x = f(x)                         (binding x only)
//   swiglu:         x = silu(x) · y
//   add:            x = x + y
//   add_gated_rows: x[i, j] += z[j] · y[i, j]     (rows of `row` values)
//   modulate_rows:  x[i, j] = x[i, j] · y[j] + z[j]

struct Params {
    n: u32,
    x_off: u32,
    y_off: u32,
    z_off: u32,
    row: u32,
    c: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> z: array<f32>;

fn index(group: vec3<u32>, groups: vec3<u32>, local: u32) -> u32 {
    return flat_id(group, groups, local, 256u);
}

@compute @workgroup_size(256)
fn unary_silu(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = index(g, ng, l);
    if i >= p.n { return; }
    let v = x[p.x_off + i];
    x[p.x_off + i] = v * sigmoid(v);
}

@compute @workgroup_size(256)
fn unary_gelu_erf(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = index(g, ng, l);
    if i >= p.n { return; }
    let v = x[p.x_off + i];
    x[p.x_off + i] = 0.5 * v * (1.0 + erf_f32(v * 0.70710678118654752));
}

@compute @workgroup_size(256)
fn unary_gelu_tanh(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = index(g, ng, l);
    if i >= p.n { return; }
    let u = x[p.x_off + i];
    x[p.x_off + i] = 0.5 * u * (1.0 + tanh_safe(0.7978846 * (u + 0.044715 * u * u * u)));
}

@compute @workgroup_size(256)
fn unary_quick_gelu(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = index(g, ng, l);
    if i >= p.n { return; }
    let v = x[p.x_off + i];
    x[p.x_off + i] = v * sigmoid(1.702 * v);
}

@compute @workgroup_size(256)
fn unary_relu(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = index(g, ng, l);
    if i >= p.n { return; }
    let v = x[p.x_off + i];
    // NaN stays NaN (max would drop it on some devices).
    x[p.x_off + i] = select(v, 0.0, v < 0.0);
}

@compute @workgroup_size(256)
fn unary_mish(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = index(g, ng, l);
    if i >= p.n { return; }
    let v = x[p.x_off + i];
    // softplus(v) = log1p(e^v); above 20 it is v to f32 precision (and e^v would overflow later).
    var sp = v;
    if v < 20.0 {
        let e = exp(v);
        // log1p without cancellation for small e.
        let u = 1.0 + e;
        sp = select(log(u) * e / (u - 1.0), e, u == 1.0);
    }
    x[p.x_off + i] = v * tanh_safe(sp);
}

@compute @workgroup_size(256)
fn unary_tanh(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = index(g, ng, l);
    if i >= p.n { return; }
    x[p.x_off + i] = tanh_safe(x[p.x_off + i]);
}

@compute @workgroup_size(256)
fn unary_add(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = index(g, ng, l);
    if i >= p.n { return; }
    x[p.x_off + i] = x[p.x_off + i] + p.c;
}

@compute @workgroup_size(256)
fn swiglu(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = flat_id(g, ng, l, 256u);
    if i >= p.n { return; }
    let v = x[p.x_off + i];
    x[p.x_off + i] = v * sigmoid(v) * y[p.y_off + i];
}

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = flat_id(g, ng, l, 256u);
    if i >= p.n { return; }
    x[p.x_off + i] = x[p.x_off + i] + y[p.y_off + i];
}

@compute @workgroup_size(256)
fn add_gated_rows(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = flat_id(g, ng, l, 256u);
    if i >= p.n { return; }
    let j = i % p.row;
    x[p.x_off + i] = x[p.x_off + i] + z[p.z_off + j] * y[p.y_off + i];
}

@compute @workgroup_size(256)
fn modulate_rows(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = flat_id(g, ng, l, 256u);
    if i >= p.n { return; }
    let j = i % p.row;
    x[p.x_off + i] = x[p.x_off + i] * y[p.y_off + j] + z[p.z_off + j];
}
