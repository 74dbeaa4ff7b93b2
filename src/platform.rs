//! What differs between the browser and a native process: the clock, and
//! handing control back so that a page stays responsive during long work.

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
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len());
        if threads > 1 {
            let f = &f;
            return std::thread::scope(|scope| {
                let workers: Vec<_> =
                    items.chunks(items.len().div_ceil(threads)).map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<R>>())).collect();
                // A worker that panicked passes its panic on, as the same
                // work on this thread would have.
                workers.into_iter().flat_map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
            });
        }
    }
    items.iter().map(f).collect()
}
