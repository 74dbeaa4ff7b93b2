//! The page's side of circuit links (`circuits::ViewLink`): reading the
//! link the page was opened with, asking before a link's model is fetched,
//! and the "Copy link" bar.

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::open::Source;
use super::page::use_page;
use crate::circuits::{LinkError, LinkModel, ViewLink};

/// The link the page was opened with: `None` without a fragment.
pub fn opened_with() -> Option<Result<ViewLink, LinkError>> {
    let hash = web_sys::window()?.location().hash().ok()?;
    let fragment = hash.strip_prefix('#').unwrap_or(&hash);
    // `#` alone, or a fragment that is not ours (no `v=`), is no link.
    (!fragment.is_empty()).then(|| ViewLink::parse(fragment))
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
pub fn LinkBar() -> impl IntoView {
    let page = use_page();
    let shown = RwSignal::new(None::<String>);
    let status = RwSignal::new(String::new());
    let copy = move |_| {
        let fragment = match untrack(|| page.link()) {
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

/// Asks before a link's model is fetched from a URL or from a release:
/// the user sees where it comes from first. A release model stored in this
/// browser opens from the store.
#[component]
pub fn LinkedModelPrompt() -> impl IntoView {
    let page = use_page();
    let asked = page.ask_model;
    move || {
        asked.get().and_then(|model| {
            let (what, source): (String, Source) = match model {
                LinkModel::Bundled(_) => return None,
                LinkModel::Url { url, .. } => (format!("a model from {url}"), Source::Url(url)),
                LinkModel::Release { base, name, .. } => (format!("{name} of the release at {base}"), Source::Release { base, name }),
            };
            let source = std::cell::RefCell::new(Some(source));
            Some(view! {
                <div class="confirm" role="alertdialog" data-testid="linked-model">
                    "This link opens "<code>{what}</code>". Load it?"
                    <button type="button" data-testid="linked-model-open" disabled=move || page.busy() on:click=move |_| {
                        asked.set(None);
                        if let Some(source) = source.borrow_mut().take() {
                            page.open(source);
                        }
                    }>"Load it"</button>
                    <button type="button" data-testid="linked-model-cancel" on:click=move |_| asked.set(None)>"No, stay here"</button>
                </div>
            })
        })
    }
}
