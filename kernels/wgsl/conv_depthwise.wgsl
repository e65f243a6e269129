// Depthwise convolution (groups = channels): one invocation per output element,
// out[c, oy, ox] = bias[c] + Σ_{ky, kx} W[c, ky, kx] · in[c, oy·sh + ky − ph, ox·sw + kx − pw].
// The weight snippet decodes W as rows of kh·kw.

struct Params {
    m: u32,          // channels
    n: u32,          // output pixels
    k: u32,          // kh · kw
    w_off: u32,
    scale_off: u32,
    row_blocks: u32,
    x_off: u32,
    y_off: u32,
    c_in: u32,
    bias_off: u32,
    has_bias: u32,
    groups: u32,
    h: u32,
    wd: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    ow: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

@compute @workgroup_size(256)
fn conv_depthwise(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let id = flat_id(g, ng, l, 256u);
    if id >= p.m * p.n { return; }
    let c = id / p.n;
    let pixel = id % p.n;
    let oy = pixel / p.ow;
    let ox = pixel % p.ow;
    var acc = 0.0;
    if p.has_bias != 0u { acc = bias[p.bias_off + c]; }
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = i32(oy * p.sh + ky) - i32(p.ph);
        if iy < 0 || iy >= i32(p.h) { continue; }
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = i32(ox * p.sw + kx) - i32(p.pw);
            if ix < 0 || ix >= i32(p.wd) { continue; }
            acc += weight1(c, ky * p.kw + kx) * x[p.x_off + (c * p.h + u32(iy)) * p.wd + u32(ix)];
        }
    }
    y[p.y_off + id] = acc;
}
