// Operands of a matrix product y[n, m] = x[n, k] · Wᵀ (+ bias[m]) for gemm_tiled.wgsl and
// matvec.wgsl: W is rows m_base .. m_base + m of a weight part (decoded by the weight snippet), x
// row-major from x_off, y rows `ldy` apart from y_off.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    w_off: u32,       // words: where the part starts in `w`
    scale_off: u32,   // words from w_off to the part's scale region
    row_blocks: u32,  // quant blocks per row
    x_off: u32,
    y_off: u32,
    ldy: u32,
    bias_off: u32,
    has_bias: u32,
    groups: u32,      // unused here (convolutions)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

fn group_of(z: u32) -> u32 {
    return 0u;
}

fn load_x(group: u32, col: u32, k: u32) -> f32 {
    return x[p.x_off + col * p.k + k];
}

fn store_y(group: u32, row: u32, col: u32, v: f32) {
    var out = v;
    if p.has_bias != 0u { out += bias[p.bias_off + row]; }
    y[p.y_off + col * p.ldy + row] = out;
}
