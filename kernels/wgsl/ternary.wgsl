// Row-wise adaLN operations, in place on `x` (rows of `row` values; see elementwise.wgsl):
//   add_gated_rows: x[i, j] += z[j] · y[i, j]
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
