// Resampling of [C, H, W] images (one invocation per output element):
//   upsample_nearest: [C, h, w] → [C, r·h, r·w], out[c, y, x] = in[c, y / r, x / r]
//   pixel_shuffle:    [C·r², h, w] → [C, r·h, r·w], out[c, y·r + i, x·r + j] = in[c·r² + i·r + j, y, x]
//   repeat_channels:  [C, h, w] → [C·r, h, w], out[c·r + k] = in[c]

struct Params {
    channels: u32, // input channels
    h: u32,
    w: u32,
    r: u32,
    in_off: u32,
    out_off: u32,
    n: u32, // output elements
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;

@compute @workgroup_size(256)
fn upsample_nearest(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let o = flat_id(g, ng, l, 256u);
    if o >= p.n { return; }
    let ow = p.w * p.r;
    let oh = p.h * p.r;
    let x = o % ow;
    let y = (o / ow) % oh;
    let c = o / (ow * oh);
    output[p.out_off + o] = input[p.in_off + (c * p.h + y / p.r) * p.w + x / p.r];
}

@compute @workgroup_size(256)
fn pixel_shuffle(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let o = flat_id(g, ng, l, 256u);
    if o >= p.n { return; }
    let ow = p.w * p.r;
    let oh = p.h * p.r;
    let ox = o % ow;
    let oy = (o / ow) % oh;
    let c = o / (ow * oh);
    let i = oy % p.r;
    let j = ox % p.r;
    let source = (c * p.r + i) * p.r + j;
    output[p.out_off + o] = input[p.in_off + (source * p.h + oy / p.r) * p.w + ox / p.r];
}

@compute @workgroup_size(256)
fn repeat_channels(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let o = flat_id(g, ng, l, 256u);
    if o >= p.n { return; }
    let plane = p.h * p.w;
    let c = o / plane / p.r;
    output[p.out_off + o] = input[p.in_off + c * plane + o % plane];
}
