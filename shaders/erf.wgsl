// Shared by the kernels that need the exact (erf) GELU: put before their
// text when their pipeline is built (kernels.rs).

// erf with absolute error below 1.2e-7 (Numerical Recipes' erfc Chebyshev fit).
fn erf(v: f32) -> f32 {
    let z = abs(v);
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * exp(poly);
    return select(erfc - 1.0, 1.0 - erfc, v >= 0.0);
}
