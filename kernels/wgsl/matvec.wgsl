// y = x · Wᵀ for a few activation rows (n ≤ 4 per workgroup, z picks the 4-row group): one
// workgroup of 64 invocations per weight row, each summing a strided share of k for every row of
// x, then a reduction: through workgroup memory here, with subgroup operations in
// matvec_subgroup.wgsl. What token-by-token decoding and per-step vectors need.

var<workgroup> partial: array<vec4<f32>, 64>;

/// This invocation's share of the dot products of weight row `row` with x rows col0 .. col0 + cols.
fn matvec_share(row: u32, col0: u32, cols: u32, l: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    let aligned = p.k & ~3u;
    for (var k = l * 4u; k < aligned; k += 256u) {
        let wv = weight4(row, k);
        for (var c = 0u; c < cols; c++) {
            let base = p.x_off + (col0 + c) * p.k + k;
            let xv = vec4<f32>(x[base], x[base + 1u], x[base + 2u], x[base + 3u]);
            acc[c] += dot(wv, xv);
        }
    }
    // A k that is not a multiple of 4 (float weights only): the tail, one value each.
    let tail = aligned + l;
    if tail < p.k {
        let wv = weight1(row, tail);
        for (var c = 0u; c < cols; c++) {
            acc[c] += wv * x[p.x_off + (col0 + c) * p.k + tail];
        }
    }
    return acc;
}

@compute @workgroup_size(64)
fn matvec(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let row = wg.x + wg.y * ng.x;
    if row >= p.m { return; }
    let col0 = wg.z * 4u;
    let cols = min(4u, p.n - col0);
    partial[l] = matvec_share(row, col0, cols, l);
    workgroupBarrier();
    for (var stride = 32u; stride > 0u; stride = stride >> 1u) {
        if l < stride {
            partial[l] = partial[l] + partial[l + stride];
        }
        workgroupBarrier();
    }
    if l < cols {
        store_y(0u, row, col0 + l, partial[0][l]);
    }
}
