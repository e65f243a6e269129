// Operands of a dense convolution as an implicit-im2col product for gemm_tiled.wgsl, per group g
// (workgroup z): out[g·m + co, pixel] = Σ_k W[g·m + co, k] · col[k, pixel] (+ bias), with
// k = (c, ky, kx) over the group's c_in channels and col read from the [C_in, h, w] input with
// zero padding.

struct Params {
    m: u32,          // output channels per group
    n: u32,          // output pixels
    k: u32,          // c_in · kh · kw per group
    w_off: u32,
    scale_off: u32,
    row_blocks: u32,
    x_off: u32,
    y_off: u32,
    c_in: u32,       // input channels per group
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

fn group_of(z: u32) -> u32 {
    return z;
}

fn load_x(group: u32, col: u32, k: u32) -> f32 {
    let taps = p.kh * p.kw;
    let c = k / taps;
    let tap = k % taps;
    let oy = col / p.ow;
    let ox = col % p.ow;
    // Signed: padding reaches before the image.
    let iy = i32(oy * p.sh + tap / p.kw) - i32(p.ph);
    let ix = i32(ox * p.sw + tap % p.kw) - i32(p.pw);
    if iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.wd) {
        return 0.0;
    }
    return x[p.x_off + ((group * p.c_in + c) * p.h + u32(iy)) * p.wd + u32(ix)];
}

fn store_y(group: u32, row: u32, col: u32, v: f32) {
    let channel = group * p.m + row;
    var out = v;
    if p.has_bias != 0u { out += bias[p.bias_off + channel]; }
    y[p.y_off + channel * p.n + col] = out;
}
