// Element-wise operations of two or three buffers, in place on `x` (see elementwise.wgsl for the
// parameter block): swiglu, add, add_gated_rows, modulate_rows.

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
