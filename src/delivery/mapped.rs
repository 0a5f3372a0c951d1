//! A webhook's events, mapped once for all the lanes of its fan-out, with
//! the identity map read and written through the store (MAPPING.md →
//! Identity) and each destination's jq rules run (`rules::Selections`), off
//! the async workers.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::MappingConfig;
use crate::queue::identity::StoreKnown;
use crate::queue::{Store, StoreError, WebhookId};
use crate::sources::Webhook;

use super::blocking::blocking;
use super::rules::{Candidate, Selected, Selections};

/// What a lane needs of one mapped event: its routing keys and its bytes
/// (not the JSON tree, which is several times larger).
pub(super) struct MappedEvent {
    pub call: crate::event::Call,
    pub name: Option<String>,
    pub json: String,
}

impl MappedEvent {
    /// What the rules see of it.
    pub fn candidate(&self) -> Candidate<'_> {
        Candidate {
            call: self.call.as_str(),
            name: self.name.as_deref(),
            json: &self.json,
        }
    }
}

/// A webhook as its lanes send it: its events, and what each destination
/// with jq rules gets of them.
pub(super) struct MappedWebhook {
    pub events: Vec<MappedEvent>,
    pub selected: Selected,
}

/// The mapped webhook (or the mapping error).
pub(super) type Mapped = Arc<Result<MappedWebhook, String>>;

/// Recently mapped webhooks by id. Mapping is a pure function of the stored
/// webhook (never changed after accept), the mapping config (fixed for the
/// life of the process) and the identity map; a hit gives what the first lane
/// to map the webhook got, so the lanes of one fan-out send the same identity
/// even when a later webhook changed the map in between. It saves a JSON parse
/// of the body for every destination after the first, which was a quarter of
/// the relay's CPU in a five-way fan-out.
///
/// One mapping per webhook: the first lane to miss maps it, and the lanes
/// that ask meanwhile wait for that result instead of mapping again (with
/// the identity map read off the async workers, 5 lanes mapped ~20% of the
/// webhooks of a five-way fan-out twice or more, and could learn different
/// identities for one webhook). A mapping that fails on the store is not
/// kept: the next lane to ask tries again.
#[derive(Default)]
pub struct MappedCache {
    entries: std::sync::Mutex<(
        HashMap<WebhookId, MappedOnce>,
        std::collections::VecDeque<WebhookId>,
    )>,
}

/// A webhook's mapping: set by the first lane to map it, awaited by the others.
type MappedOnce = Arc<tokio::sync::OnceCell<Mapped>>;

/// Webhooks kept; fan-out lanes work the same webhooks at about the same time.
const MAPPED_CACHE: usize = 1024;

/// Maps `webhook` and runs the jq rules of its source's destinations on the
/// events.
fn map_and_select(
    webhook: &Webhook,
    cfg: &MappingConfig,
    selections: &Selections,
    store: Option<&dyn Store>,
    now_ms: u64,
) -> Result<Result<MappedWebhook, String>, StoreError> {
    Ok(map_and_learn(webhook, cfg, store, now_ms)?.map(|events| {
        let candidates: Vec<Candidate<'_>> = events.iter().map(MappedEvent::candidate).collect();
        let selected = selections.select(&webhook.meta().source, &candidates);
        MappedWebhook { events, selected }
    }))
}

/// Maps `webhook`, reading the identity map of its scope in `store` (if any)
/// and writing what it teaches. A storage error is returned, not mapped
/// around: a mapping made without the map would send the wrong identity.
fn map_and_learn(
    webhook: &Webhook,
    cfg: &MappingConfig,
    store: Option<&dyn Store>,
    now_ms: u64,
) -> Result<Result<Vec<MappedEvent>, String>, StoreError> {
    let mapped = match store {
        None => crate::mapping::map(webhook, cfg),
        Some(store) => {
            let known = StoreKnown::new(store, crate::mapping::scope(webhook.meta()));
            let result = crate::mapping::map_known(webhook, cfg, &known);
            if let Some(e) = known.into_error() {
                return Err(e);
            }
            match result {
                Ok((events, learned)) => {
                    if !learned.is_empty() {
                        crate::queue::identity::apply(store, &learned, now_ms)?;
                    }
                    Ok(events)
                }
                Err(e) => Err(e),
            }
        }
    };
    Ok(mapped
        .map(|events| {
            events
                .into_iter()
                .map(|e| MappedEvent {
                    call: e.call(),
                    name: e.name().map(str::to_string),
                    json: e.to_json(),
                })
                .collect()
        })
        .map_err(|e| e.to_string()))
}

impl MappedCache {
    /// The events of `webhook` (stored as `id`), mapped with `mapping` and,
    /// when there is one, the identity map in `identity`, with the outcome of
    /// each destination's jq rules in `selections`.
    pub(super) async fn get_or_map(
        &self,
        id: WebhookId,
        webhook: &Webhook,
        mapping: &Arc<MappingConfig>,
        selections: &Arc<Selections>,
        identity: Option<&Arc<dyn Store>>,
        clock: fn() -> u64,
    ) -> Result<Mapped, StoreError> {
        let cell = {
            let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let (map, order) = &mut *guard;
            match map.get(&id) {
                Some(cell) => cell.clone(),
                None => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    map.insert(id, cell.clone());
                    order.push_back(id);
                    while order.len() > MAPPED_CACHE {
                        if let Some(old) = order.pop_front() {
                            map.remove(&old);
                        }
                    }
                    cell
                }
            }
        };
        let mapped = cell
            .get_or_try_init(|| async {
                let now = clock();
                let mapped = match identity {
                    None => map_and_select(webhook, mapping, selections, None, now)?,
                    Some(store) => {
                        // The map is read and written through the store: off the
                        // async workers, like every other store call of a lane
                        // (and the jq rules with it).
                        let (store, cfg, hook) = (store.clone(), mapping.clone(), webhook.clone());
                        let selections = selections.clone();
                        blocking(move || {
                            map_and_select(&hook, &cfg, &selections, Some(store.as_ref()), now)
                        })
                        .await
                        .ok_or_else(|| StoreError::Backend("mapping panicked".into()))??
                    }
                };
                Ok::<Mapped, StoreError>(Arc::new(mapped))
            })
            .await?;
        Ok(mapped.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryConfig;
    use crate::delivery::attempt::Context;

    /// Lanes that ask for one webhook's events while its mapping runs (off
    /// the async workers, with the identity map) get that mapping: the same
    /// events, mapped once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lanes_asking_at_once_share_one_mapping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> =
            Arc::new(crate::queue::embedded::EmbeddedStore::open(dir.path()).expect("store"));
        let (ctx, _trigger) =
            Context::for_tests(HashMap::new(), Some(store), RetryConfig::default(), || {
                1_700_000_000_000
            });
        let order = include_str!("../../samples/shopify/orders__create.json");
        let webhook = crate::queue::contract::webhook("e1", order);
        let lane = || {
            ctx.mapped.get_or_map(
                7,
                &webhook,
                &ctx.mapping,
                &ctx.selections,
                ctx.identity.as_ref(),
                ctx.clock,
            )
        };
        let (a, b, c) = tokio::join!(lane(), lane(), lane());
        let (a, b, c) = (a.expect("mapped"), b.expect("mapped"), c.expect("mapped"));
        assert!(
            Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&a, &c),
            "mapped more than once"
        );
        assert!(a.as_ref().as_ref().is_ok_and(|m| !m.events.is_empty()));
    }
}
