//! The fast path's elementwise and per-token ops: AbsTopK, GELU and the
//! `exp` that GELU and the softmax share.


/// |x| as an integer: for non-negative floats (NaN above infinity) integer
/// order is the total order the reference sorts magnitudes by.
fn magnitude(v: f32) -> u32 {
    v.to_bits() & 0x7fff_ffff
}

/// Buckets of the magnitudes' top bits (exponent and two mantissa bits): a
/// bucket spans a quarter of a binade. Measured at the released shape, 2048
/// wide rows keeping 512: 1024 buckets kept the threshold's bucket to a few
/// percent of the row without the histogram's clearing costing more than it saves.
const BUCKET_SHIFT: u32 = 21;
const BUCKETS: usize = 1 << (31 - BUCKET_SHIFT);

/// AbsTopK on one row: keeps the `k` entries of largest |x| (ties to the
/// lower index, the reference's rule) and zeros the rest. `None`, or a `k` of
/// at least the row's width, keeps every entry.
#[inline]
pub fn keep_largest(row: &mut [f32], k: Option<usize>) {
    let Some(k) = k else { return };
    if k >= row.len() {
        return;
    }
    if k == 0 {
        row.fill(0.0);
        return;
    }
    // The k-th largest magnitude: count magnitudes per bucket, walk down from
    // the top bucket to the one that holds it, and select within that one.
    // Even and odd entries count apart: neighbours often share a bucket, and
    // one count's increments waited on each other's stores.
    let mut counts = [[0u32; BUCKETS]; 2];
    let mut zeros = 0;
    let pairs = row.chunks_exact(2);
    for &v in pairs.remainder() {
        counts[0][(magnitude(v) >> BUCKET_SHIFT) as usize] += 1;
        zeros += usize::from(magnitude(v) == 0);
    }
    for pair in pairs {
        for (counts, &v) in counts.iter_mut().zip(pair) {
            counts[(magnitude(v) >> BUCKET_SHIFT) as usize] += 1;
            zeros += usize::from(magnitude(v) == 0);
        }
    }
    if row.len() - zeros <= k {
        // At most k nonzeros: every entry to drop is zero already.
        return;
    }
    let in_bucket = |bucket: usize| (counts[0][bucket] + counts[1][bucket]) as usize;
    let (mut above, mut bucket) = (0usize, BUCKETS - 1);
    while above + in_bucket(bucket) < k {
        above += in_bucket(bucket);
        bucket -= 1;
    }
    // That bucket's magnitudes, gathered without a branch on each entry.
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.resize(row.len(), 0);
        let mut n = 0;
        for &v in row.iter() {
            let m = magnitude(v);
            scratch[n] = m;
            n += usize::from((m >> BUCKET_SHIFT) as usize == bucket);
        }
        keep_from_bucket(row, k, above, &mut scratch[..n]);
    });
}

thread_local! {
    /// The magnitudes of a row's threshold bucket (`keep_largest`).
    static SCRATCH: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The rest of `keep_largest`, given the magnitudes `in_bucket` of the
/// bucket holding the k-th largest, with `above` entries in higher buckets.
#[inline]
fn keep_from_bucket(row: &mut [f32], k: usize, above: usize, in_bucket: &mut [u32]) {
    // The (k - above)-th largest of the bucket.
    let rank = in_bucket.len() - (k - above);
    let threshold = *in_bucket.select_nth_unstable(rank).1;
    let greater = above + in_bucket[rank + 1..].iter().filter(|&&m| m > threshold).count();
    let at_threshold = in_bucket.iter().filter(|&&m| m == threshold).count();
    let mut ties = k - greater;
    if ties == at_threshold {
        // Every entry at the threshold is kept (the usual case): a pass
        // without branches, which vectorises.
        row.iter_mut().for_each(|v| *v = if magnitude(*v) >= threshold { *v } else { 0.0 });
        return;
    }
    for v in row.iter_mut() {
        let m = magnitude(*v);
        let keep = m > threshold || (m == threshold && ties > 0);
        if m == threshold && keep {
            ties -= 1;
        }
        if !keep {
            *v = 0.0;
        }
    }
}

/// `e^x` within about 2 ulp for x in [-87, 88] (below, a tiny normal number
/// instead of a subnormal or 0), without branches or calls, so that a loop
/// over it vectorises: Cody-Waite reduction to `r` in [-ln2/2, ln2/2], then
/// Cephes' `expf` polynomial, scaled by `2^n` through the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    // n = round(x / ln2), and the same n in the low bits of `shifted`.
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n from the bits: `shifted`'s mantissa is 2^22 + n, and shifting
    // n + 127 into the exponent drops the 2^22. (A float-to-int `as` would
    // saturate and check for NaN, which keeps the loop from vectorising.)
    e * f32::from_bits(shifted.to_bits().wrapping_add(127) << 23)
}

/// The exact GELU, `x Phi(x)`, with `erf` to within 1.2e-7 (Numerical
/// Recipes' erfc fit, the same as the shaders' `erf.wgsl`).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn erf(v: f32) -> f32 {
    let z = v.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06 + t * (0.278_868_07 + t * (-1.135_204 + t * (1.488_515_9 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * exp(poly);
    if v >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_the_standard_library() {
        for i in -86_000..88_000 {
            let x = i as f32 * 1e-3;
            let (ours, std) = (exp(x), x.exp());
            assert!((ours - std).abs() <= 2.0 * f32::EPSILON * std, "exp({x}) = {ours}, std {std}");
        }
    }

    #[test]
    fn gelu_is_within_a_few_ulp_of_the_f64_reference() {
        for i in -10_000..=10_000 {
            let x = i as f32 * 1e-3;
            let exact = (0.5 * f64::from(x) * (1.0 + libm::erf(f64::from(x) / std::f64::consts::SQRT_2))) as f32;
            assert!((gelu(x) - exact).abs() <= 2e-7 * exact.abs().max(1.0), "gelu({x}) = {}, f64 {exact}", gelu(x));
        }
    }

    /// The reference's rule, spelled out: sort by |x| descending, ties to the
    /// lower index, keep k.
    fn by_sorting(row: &[f32], k: usize) -> Vec<f32> {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].abs().total_cmp(&row[a].abs()).then(a.cmp(&b)));
        let mut out = vec![0.0; row.len()];
        order[..k].iter().for_each(|&i| out[i] = row[i]);
        out
    }

    #[test]
    fn keep_largest_keeps_what_sorting_keeps_ties_included() {
        let mut rng = crate::rng::SplitMix(3);
        for case in 0..400 {
            let n = 1 + case % 97;
            // Few distinct magnitudes for many ties, zeros, both signs, and
            // magnitudes over many binades.
            let row: Vec<f32> = (0..n)
                .map(|_| match rng.below(4) {
                    0 => 0.0,
                    1 => (rng.below(5) as f32 - 2.0) * 0.5,
                    2 => rng.signed() * 1e-3,
                    _ => rng.signed() * 1e4,
                })
                .collect();
            for k in [0, 1, n / 3, n / 2, n - 1, n] {
                let mut ours = row.clone();
                keep_largest(&mut ours, Some(k));
                assert_eq!(ours, by_sorting(&row, k), "row {row:?}, k {k}");
            }
        }
    }
}
