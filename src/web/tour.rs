//! Classroom mode: a guided tour per task (`circuits::tour`), stepped with
//! buttons or the keyboard, with the page set large for a projector.

use leptos::ev;
use leptos::prelude::*;

use super::page::{use_page, Page};
use crate::circuits::{Focus, ViewLink};
use crate::platform::sleep;

/// Sets the page large (the `classroom` class on `<html>`) or back.
fn present(on: bool) {
    if let Some(root) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.document_element()) {
        let _ = root.class_list().toggle_with_force("classroom", on);
    }
}

/// Scrolls the part of the page a step is about to the top, once the
/// step's run is done.
async fn bring_into_view(focus: Focus, ready: Signal<bool>) {
    sleep(0).await;
    while !ready.get_untracked() {
        sleep(50).await;
    }
    let selector = match focus {
        Focus::Prompt => ".token-strip",
        Focus::Circuit => "[data-testid=circuit-canvas]",
        Focus::Inspector => "[data-testid=node-inspector]",
        Focus::Ablation => "section:has(> ol.predictions)",
    };
    // The inspector appears once the graph has its selected node: give it a few frames.
    for _ in 0..20 {
        let found = web_sys::window().and_then(|w| w.document()).and_then(|d| d.query_selector(selector).ok().flatten());
        if let Some(element) = found {
            return element.scroll_into_view();
        }
        sleep(50).await;
    }
}

/// Whether a key press is typing into a field (arrow keys move the caret there).
fn typing(ev: &web_sys::KeyboardEvent) -> bool {
    let tag = ev.target().and_then(|t| wasm_bindgen::JsCast::dyn_into::<web_sys::Element>(t).ok()).map(|e| e.tag_name());
    matches!(tag.as_deref(), Some("INPUT" | "TEXTAREA" | "SELECT"))
}

impl Page {
    /// Shows step `at` = (tour, step) of the model's tours, its prompt run
    /// first when it is another; `None` leaves the tour.
    pub fn tour_step(self, at: Option<(usize, usize)>) {
        self.touring.set(at);
        present(at.is_some());
        let Some((tour, step)) = at else { return };
        let found = self.opened.with_untracked(|o| o.as_ref()?.tours.get(tour)?.steps.get(step).map(|s| (s.view.clone(), s.focus)));
        let Some((view, focus)) = found else { return };
        match ViewLink::parse(&view) {
            Ok(link) => {
                self.show_view(link);
                leptos::task::spawn_local(bring_into_view(focus, Signal::derive(move || self.ready())));
            }
            Err(e) => self.error.set(Some(format!("tour step {}: {e}", step + 1))),
        }
    }

    /// The next (`delta` 1) or previous (-1) step of the tour shown, once the page is ready.
    fn tour_step_by(self, delta: isize) {
        let Some((tour, step)) = self.touring.get_untracked() else { return };
        let steps = self.opened.with_untracked(|o| o.as_ref().and_then(|o| o.tours.get(tour)).map_or(0, |t| t.steps.len()));
        let next = step as isize + delta;
        if untrack(|| self.ready()) && (0..steps as isize).contains(&next) {
            self.tour_step(Some((tour, next as usize)));
        }
    }
}

/// The model's tours in the side bar, each a button that starts it.
#[component]
pub fn TourList() -> impl IntoView {
    let page = use_page();
    let tours = Memo::new(move |_| page.opened.with(|o| o.as_ref().map(|o| o.tours.clone()).unwrap_or_default()));
    let list = move || {
        tours
            .get()
            .into_iter()
            .enumerate()
            .map(|(index, tour)| {
                view! {
                    <button type="button" data-testid="start-tour" data-task=tour.task.clone() disabled=move || !page.ready() on:click=move |_| page.tour_step(Some((index, 0)))>
                        {tour.task.clone()}
                    </button>
                }
            })
            .collect_view()
    };
    view! {
        <Show when=move || tours.with(|t| !t.is_empty())>
            <section class="classroom-tours" data-testid="classroom">
                <h3>"Classroom: a guided tour of each task's circuit"</h3>
                <div class="tour-list">{list}</div>
            </section>
        </Show>
    }
}

/// The step shown, in a panel along the bottom of the page, stepped with
/// its buttons or the keyboard (arrows, Page Up/Down, Escape to leave).
#[component]
pub fn TourPanel() -> impl IntoView {
    let page = use_page();
    let touring = page.touring;
    let keys = window_event_listener(ev::keydown, move |ev| {
        if touring.get_untracked().is_none() || typing(&ev) {
            return;
        }
        match ev.key().as_str() {
            "ArrowRight" | "PageDown" => page.tour_step_by(1),
            "ArrowLeft" | "PageUp" => page.tour_step_by(-1),
            "Escape" => page.tour_step(None),
            _ => return,
        }
        ev.prevent_default();
    });
    on_cleanup(move || keys.remove());
    move || {
        let (index, step) = touring.get()?;
        let tour = page.opened.with(|o| o.as_ref()?.tours.get(index).cloned())?;
        let shown = tour.steps.get(step)?.clone();
        let last = tour.steps.len() - 1;
        let ready = move || page.ready();
        Some(view! {
            <div class="tour-panel" role="dialog" aria-label=tour.title.clone() data-testid="tour" data-task=tour.task.clone() data-step=step>
                <p class="tour-title">{tour.title.clone()}" · step "{step + 1}" of "{tour.steps.len()}</p>
                <h2 data-testid="tour-step-title">{shown.title}</h2>
                <p data-testid="tour-text">{shown.text}</p>
                <div class="tour-buttons">
                    <button type="button" data-testid="tour-back" disabled=move || step == 0 || !ready() on:click=move |_| page.tour_step_by(-1)>"← Back"</button>
                    <button type="button" data-testid="tour-next" disabled=move || step == last || !ready() on:click=move |_| page.tour_step_by(1)>"Next →"</button>
                    <button type="button" data-testid="tour-exit" on:click=move |_| page.tour_step(None)>"Leave the tour (Esc)"</button>
                </div>
            </div>
        })
    }
}
