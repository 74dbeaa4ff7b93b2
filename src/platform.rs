//! What differs between the browser and a native process: the clock,
//! handing control back so that a page stays responsive during long work,
//! and threads (natively one per core, in the page the one it has).

/// Milliseconds since some fixed moment, with sub-millisecond resolution
/// where the platform has it (`performance.now()` in the browser).
pub fn now_ms() -> f64 {
    #[cfg(all(target_arch = "wasm32", feature = "web"))]
    {
        web_sys::window().and_then(|w| w.performance()).map_or_else(js_sys::Date::now, |p| p.now())
    }
    #[cfg(not(all(target_arch = "wasm32", feature = "web")))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
    }
}

/// Resolves after `ms` milliseconds (a browser timer), letting the browser
/// paint and handle input meanwhile. Natively there is nobody to hand
/// control to, and it returns at once.
pub async fn sleep(ms: i32) {
    #[cfg(all(target_arch = "wasm32", feature = "web"))]
    {
        let promise = js_sys::Promise::new(&mut |resolve, _| {
            if let Some(window) = web_sys::window() {
                let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
            }
        });
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    }
    #[cfg(not(all(target_arch = "wasm32", feature = "web")))]
    let _ = ms;
}

/// `f` of every item, in order: natively spread over the machine's cores
/// in contiguous chunks (for independent passes, such as one per task
/// example), in the browser one after another.
pub fn map_on_cores<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = spare_cores().min(items.len()).max(1);
    let chunks: Vec<&[T]> = items.chunks(items.len().div_ceil(threads).max(1)).collect();
    on_threads(chunks.len(), |i| chunks[i].iter().map(&f).collect::<Vec<R>>()).into_iter().flatten().collect()
}

/// A copy of `values`, natively made by several cores at once (a large
/// readback's mapped memory into a tensor): one core alone copies at a
/// fraction of the memory's speed. Each thread copies at least 4 MB.
pub fn copy_on_cores(values: &[f32]) -> Vec<f32> {
    let threads = spare_cores().min(values.len() >> 20).max(1);
    if threads == 1 {
        return values.to_vec();
    }
    let mut copy = vec![0.0f32; values.len()];
    let per = values.len().div_ceil(threads);
    let parts: Vec<std::sync::Mutex<&mut [f32]>> = copy.chunks_mut(per).map(std::sync::Mutex::new).collect();
    on_threads(parts.len(), |i| {
        let mut part = parts[i].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let len = part.len();
        part.copy_from_slice(&values[i * per..i * per + len]);
    });
    drop(parts);
    copy
}

/// `f(0)`, ..., `f(n - 1)`, each on a thread of its own (this one runs
/// `f(0)`), all at once: `f` may wait for the others (a barrier). Natively
/// only; in the browser `n` must be 1 ([`spare_cores`] is).
pub fn on_threads<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    #[cfg(not(target_arch = "wasm32"))]
    if n > 1 {
        let f = &f;
        return std::thread::scope(|scope| {
            let others: Vec<_> = (1..n)
                .map(|i| {
                    scope.spawn(move || {
                        ON_A_WORKER.set(true);
                        f(i)
                    })
                })
                .collect();
            let was = ON_A_WORKER.replace(true);
            let first = f(0);
            ON_A_WORKER.set(was);
            // A thread that panicked passes its panic on, as the same work
            // on this thread would have.
            std::iter::once(first).chain(others.into_iter().map(|other| other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))).collect()
        });
    }
    assert!(n <= 1, "one thread only here");
    (0..n).map(f).collect()
}

/// The threads work may be spread over from here: natively the machine's
/// cores, but one on a thread [`on_threads`] started (its siblings have the
/// others) and in the browser.
pub fn spare_cores() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    if !ON_A_WORKER.get() {
        return std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    1
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static ON_A_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
