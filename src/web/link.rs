//! The page's side of circuit links (`circuits::ViewLink`): reading the
//! link the page was opened with, and the "Copy link" bar.

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::summary::encode_prompt;
use crate::circuits::{LinkError, ViewLink};
use crate::model::{Model, Tokenizer};

/// The link the page was opened with: `None` without a fragment.
pub fn opened_with() -> Option<Result<ViewLink, LinkError>> {
    let hash = web_sys::window()?.location().hash().ok()?;
    let fragment = hash.strip_prefix('#').unwrap_or(&hash);
    // `#` alone, or a fragment that is not ours (no `v=`), is no link.
    (!fragment.is_empty()).then(|| ViewLink::parse(fragment))
}

/// Whether all of `link` fits `model`: its nodes, tokens and weights hash
/// ([`ViewLink::check`]), and its token position within its prompt. A link
/// that does not fit is not shown at all, not half of it.
pub fn fits(link: &ViewLink, model: &Model, tokenizer: Option<&Tokenizer>) -> Result<(), String> {
    link.check(model).map_err(|e| e.to_string())?;
    let tokens = encode_prompt(model, tokenizer, &link.prompt)?;
    match link.position {
        Some(at) if at >= tokens.len() => Err(format!("the link's token position {at} is past its prompt's {} tokens", tokens.len())),
        _ => Ok(()),
    }
}

/// A link pasted into the address bar of an open page changes only its
/// fragment: the page reloads to open it as it would in a new tab. (Copy
/// link replaces the address without this event.)
pub fn reopen_on_new_link() {
    // Listens for the page's lifetime: the handle is not kept to remove it.
    let _ = window_event_listener(leptos::ev::hashchange, |_| {
        if let Some(window) = web_sys::window() {
            let _ = window.location().reload();
        }
    });
}

/// This page's address with `fragment` as its link.
fn address_with(fragment: &str) -> Option<String> {
    let location = web_sys::window()?.location();
    Some(format!("{}{}{}#{fragment}", location.origin().ok()?, location.pathname().ok()?, location.search().ok()?))
}

/// "Copy link": puts the view's link in the address bar (without reloading)
/// and on the clipboard, and shows it to select by hand where the clipboard
/// is not allowed.
#[component]
pub fn LinkBar(
    /// The current view's link fragment, or why there is none.
    link: Signal<Result<String, String>>,
) -> impl IntoView {
    let shown = RwSignal::new(None::<String>);
    let status = RwSignal::new(String::new());
    let copy = move |_| {
        let fragment = match link.get_untracked() {
            Ok(fragment) => fragment,
            Err(why) => return status.set(why),
        };
        let Some(address) = address_with(&fragment) else { return };
        if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
            let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&address));
        }
        shown.set(Some(address.clone()));
        status.set("copying…".into());
        spawn_local(async move {
            let Some(clipboard) = web_sys::window().map(|w| w.navigator().clipboard()) else { return };
            let copied = wasm_bindgen_futures::JsFuture::from(clipboard.write_text(&address)).await;
            status.set(if copied.is_ok() { "copied".into() } else { "select the link to copy it (the clipboard is not allowed here)".into() });
        });
    };
    view! {
        <div class="link-bar">
            <button type="button" data-testid="copy-link" title="A link that reopens this exact view" on:click=copy>"Copy link"</button>
            {move || shown.get().map(|address| view! {
                <input type="text" readonly data-testid="link" class="link" prop:value=address on:focus=move |ev| {
                    event_target::<web_sys::HtmlInputElement>(&ev).select();
                } />
            })}
            <span class="link-status" data-testid="link-status">{move || status.get()}</span>
        </div>
    }
}

/// Asks before a link's model is fetched from a URL: the user sees where it
/// comes from first.
#[component]
pub fn LinkedModelPrompt(
    /// The URL a link asks to open.
    url: RwSignal<Option<String>>,
    on_open: impl Fn(String) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    move || {
        url.get().map(|address| {
            let open = address.clone();
            view! {
                <div class="confirm" role="alertdialog" data-testid="linked-model">
                    "This link opens a model from "<code>{address}</code>". Load it?"
                    <button type="button" data-testid="linked-model-open" on:click=move |_| { url.set(None); on_open(open.clone()) }>"Load it"</button>
                    <button type="button" data-testid="linked-model-cancel" on:click=move |_| url.set(None)>"No, stay here"</button>
                </div>
            }
        })
    }
}
