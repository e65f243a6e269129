// A tiled matrix product over shared-memory tiles: each workgroup of 256 invocations computes a
// 64 × 64 tile of out[row, col] = Σ_k W[row, k] · X[col, k], each invocation a 4 × 4 block in
// registers, walking k in steps of 16 with both operand tiles in workgroup memory. W comes from
// the weight snippet (`weight4` / `weight1`, any GGUF type), X and the output from the io
// snippet (`load_x`, `store_y`: a plain matrix, or a convolution's implicit im2col). The weight
// rows of group g start at row g·m.

const TILE: u32 = 64u;
const DEPTH: u32 = 16u;

// [DEPTH][TILE] each, as vec4s along the tile.
var<workgroup> w_tile: array<vec4<f32>, 256>;
var<workgroup> x_tile: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn gemm_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let group = group_of(wg.z);
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let tx = l % 16u; // columns col0 + 4tx ..
    let ty = l / 16u; // rows row0 + 4ty ..
    // Loading: invocation l fetches 4 consecutive k of tile row (l / 4) for both operands.
    let load_line = l / 4u;
    let load_k = (l % 4u) * 4u;
    let w_row = row0 + load_line;
    let x_col = col0 + load_line;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += DEPTH) {
        let k = k0 + load_k;
        var wv = vec4<f32>(0.0);
        if w_row < p.m {
            let r = group * p.m + w_row;
            if k + 3u < p.k {
                wv = weight4(r, k);
            } else {
                for (var e = 0u; e < 4u; e++) {
                    if k + e < p.k { wv[e] = weight1(r, k + e); }
                }
            }
        }
        var xv = vec4<f32>(0.0);
        if x_col < p.n {
            for (var e = 0u; e < 4u; e++) {
                if k + e < p.k { xv[e] = load_x(group, x_col, k + e); }
            }
        }
        for (var e = 0u; e < 4u; e++) {
            w_tile[(load_k + e) * 16u + load_line / 4u][load_line % 4u] = wv[e];
            x_tile[(load_k + e) * 16u + load_line / 4u][load_line % 4u] = xv[e];
        }
        workgroupBarrier();
        for (var d = 0u; d < DEPTH; d++) {
            let a = w_tile[d * 16u + ty];
            let b = x_tile[d * 16u + tx];
            acc[0] += a * b.x;
            acc[1] += a * b.y;
            acc[2] += a * b.z;
            acc[3] += a * b.w;
        }
        workgroupBarrier();
    }
    for (var c = 0u; c < 4u; c++) {
        let col = col0 + tx * 4u + c;
        if col >= p.n { continue; }
        for (var r = 0u; r < 4u; r++) {
            let row = row0 + ty * 4u + r;
            if row < p.m {
                store_y(group, row, col, acc[c][r]);
            }
        }
    }
}
