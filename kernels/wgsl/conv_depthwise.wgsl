// Depthwise convolution (groups = channels), with conv_io.wgsl's parameters and bindings (`m` =
// channels, `k` = kh · kw): one invocation per output element,
// out[c, oy, ox] = bias[c] + Σ_{ky, kx} W[c, ky, kx] · in[c, oy·sh + ky − ph, ox·sw + kx − pw].

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
