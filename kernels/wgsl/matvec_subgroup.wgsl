// matvec.wgsl with subgroup reductions (devices with the SUBGROUP feature): each subgroup adds its
// invocations' shares with one subgroupAdd, and the subgroups' sums meet in workgroup memory.

@compute @workgroup_size(64)
fn matvec_subgroup(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) ng: vec3<u32>,
    @builtin(local_invocation_index) l: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
) {
    let row = wg.x + wg.y * ng.x;
    if row >= p.m { return; }
    let col0 = wg.z * 4u;
    let cols = min(4u, p.n - col0);
    let sum = subgroupAdd(matvec_share(row, col0, cols, l));
    if lane == 0u {
        partial[subgroup] = sum;
    }
    workgroupBarrier();
    if l < cols {
        var total = 0.0;
        for (var s = 0u; s < subgroups; s++) {
            total += partial[s][l];
        }
        store_y(0u, row, col0 + l, total);
    }
}
