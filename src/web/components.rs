use leptos::prelude::*;

use super::summary::RunSummary;

#[component]
pub fn ErrorBanner(error: RwSignal<Option<String>>) -> impl IntoView {
    move || {
        error.get().map(|message| {
            view! { <div class="error-banner" role="alert" data-testid="error-banner">{message}</div> }
        })
    }
}

/// Token ids in, a run out. Enter in the field runs too.
#[component]
pub fn TokenForm(ready: Signal<bool>, on_run: impl Fn(String) + Copy + 'static) -> impl IntoView {
    let text = RwSignal::new(String::new());
    view! {
        <form class="token-form" on:submit=move |ev| {
            ev.prevent_default();
            on_run(text.get_untracked());
        }>
            <label for="tokens">"Token ids"</label>
            <input
                id="tokens"
                data-testid="token-input"
                placeholder="e.g. 88, 58, 30, 80"
                autocomplete="off"
                prop:value=text
                on:input=move |ev| text.set(event_target_value(&ev))
            />
            <button type="submit" data-testid="run-button" disabled=move || !ready.get()>
                "Run"
            </button>
        </form>
    }
}

#[component]
pub fn Predictions(summary: RwSignal<Option<RunSummary>>) -> impl IntoView {
    let rows = move || summary.get().map(|s| s.predictions).unwrap_or_default();
    view! {
        <section>
            <h2>"Next token"</h2>
            <ol class="predictions">
                <For each=rows key=|p| p.token let:p>
                    <li data-testid="prediction" data-token=p.token>
                        <span class="token">{format!("token {}", p.token)}</span>
                        <span class="bar" style=format!("width: {:.1}%", 100.0 * p.prob)></span>
                        <span class="prob">{format!("{:.1}%", 100.0 * p.prob)}</span>
                    </li>
                </For>
            </ol>
        </section>
    }
}

/// One row per layer: the root-mean-square of every recorded site, drawn as
/// bars on one scale so layers can be compared at a glance.
#[component]
pub fn LayerTable(summary: RwSignal<Option<RunSummary>>) -> impl IntoView {
    move || {
        let summary = summary.get()?;
        let max = summary
            .layers
            .iter()
            .flat_map(|l| l.site_norms.iter().map(|(_, n)| *n))
            .fold(f32::MIN_POSITIVE, f32::max);
        let header = summary.layers.first().map(|l| l.site_norms.iter().map(|(name, _)| view! { <th>{name.clone()}</th> }).collect_view());
        let rows = summary
            .layers
            .into_iter()
            .map(|layer| {
                let cells = layer
                    .site_norms
                    .into_iter()
                    .map(|(name, norm)| {
                        view! {
                            <td title=format!("{}.{name}: rms {norm:.4}", layer.layer)>
                                <div class="cell-bar" style=format!("width: {:.1}%", 100.0 * norm / max)></div>
                                <span>{format!("{norm:.3}")}</span>
                            </td>
                        }
                    })
                    .collect_view();
                view! { <tr data-testid="layer-row" data-layer=layer.layer><th>{format!("layer {}", layer.layer)}</th>{cells}</tr> }
            })
            .collect_view();
        Some(view! {
            <section>
                <h2>"Activation size per site (root mean square)"</h2>
                <table class="layers"><thead><tr><th></th>{header}</tr></thead><tbody>{rows}</tbody></table>
            </section>
        })
    }
}
